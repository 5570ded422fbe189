"""The Functions app: an index of the blueprints in `handlers/`. No logic lives here."""

import azure.functions as func

from aegis import settings
from handlers import approvals, enrich, ingest, inventory, respond, retention

settings.get()  # a missing or invalid setting fails the worker at start-up, naming the setting

app = func.FunctionApp()
app.register_functions(ingest.bp)
app.register_functions(respond.bp)
app.register_functions(approvals.bp)
app.register_functions(enrich.bp)
app.register_functions(retention.bp)
app.register_functions(inventory.bp)
