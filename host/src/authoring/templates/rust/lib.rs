//! {{name}}: a sluice {{kind}} policy. Build with `sluice plugin build`,
//! try with `sluice plugin test build/{{name}}.wasm --kind {{kind}} --input samples/request.json`.

wit_bindgen::generate!({ world: "{{world}}", path: "wit" });

use exports::sluice::policy::lifecycle::Guest as Lifecycle;

struct Policy;

impl Lifecycle for Policy {
    /// Called with the plugin's config (JSON) before every call; an Err
    /// rejects the plugin at load time.
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}
{{body}}
export!(Policy);
