"""Azure Functions blueprints: one per trigger family. Each decodes its input, calls the core
(`aegis`), maps errors to the trigger's semantics and returns."""
