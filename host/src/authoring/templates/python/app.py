"""{{name}}: a sluice {{kind}} policy.

Build with `sluice plugin build`, try with
`sluice plugin test build/{{name}}.wasm --kind {{kind}} --input samples/request.json --deadline-ms 500`
(CPython starts in every fresh instance: more than the default 50 ms).
"""

from wit_world import exports
{{body}}

class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        """Called with the plugin's config (JSON) before every call; raising
        componentize_py_types.Err(reason) rejects the plugin at load time."""
        pass
