
use exports::sluice::policy::cache_key::{Decision, Entry, Guest as CacheKey, Scope};
use sluice::policy::types::Request;

impl CacheKey for Policy {
    fn derive(req: Request) -> Decision {
        if req.streaming {
            return Decision::Bypass("streaming".into());
        }
        let mut key = req.model.clone();
        for m in &req.messages {
            key.push('\n');
            key.push_str(&m.role);
            key.push(':');
            key.push_str(&m.text);
        }
        Decision::Cache(Entry {
            key,
            ttl_seconds: 300,
            scope: Scope::Tenant,
        })
    }
}
