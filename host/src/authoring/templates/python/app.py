"""{{name}}: a sluice {{kind}} policy.

Build with `sluice plugin build`, try with
`sluice plugin test build/{{name}}.wasm --kind {{kind}} --input samples/request.json --deadline-ms 500`
(CPython starts in every fresh instance: more than the default 50 ms).

`@checked` (sluice_checks.py) checks what each method returns against the
WIT types, so a wrong type fails with the field and this file's line.
"""

from sluice_checks import checked
from wit_world import exports
{{body}}

@checked
class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        """Called with the plugin's config (JSON) before every call; raising
        componentize_py_types.Err(reason) rejects the plugin at load time."""
        pass
