from wit_world.exports.cache_key import Decision, Decision_Bypass, Decision_Cache, Entry, Scope
from wit_world.imports.types import Request


@checked
class CacheKey(exports.CacheKey):
    def derive(self, req: Request) -> Decision:
        if req.streaming:
            return Decision_Bypass("streaming")
        key = req.model + "".join(f"\n{m.role}:{m.text}" for m in req.messages)
        return Decision_Cache(Entry(key=key, ttl_seconds=300, scope=Scope.TENANT))
