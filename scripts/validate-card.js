// Validate an Adaptive Card (JSON on stdin) with the Adaptive Cards library itself (npm
// `adaptivecards`, installed by `make test`): what it cannot parse, or finds invalid, is printed as
// JSON lines; no output means the card is valid. Used by tests/test_bot.py.
const AC = require("adaptivecards/dist/adaptivecards.js"); // the bundle: the package's lib/ is ESM without extensions
const card = JSON.parse(require("fs").readFileSync(0, "utf8"));
const context = new AC.SerializationContext();
const parsed = new AC.AdaptiveCard();
parsed.parse(card, context);
for (let i = 0; i < context.eventCount; i++) {
  const e = context.getEventAt(i);
  console.log(JSON.stringify({ phase: "parse", message: e.message }));
}
for (const e of parsed.validateProperties().validationEvents || []) {
  console.log(JSON.stringify({ phase: "validate", message: e.message }));
}
