// {{name}}: a sluice {{kind}} policy in JavaScript. Build with `sluice plugin build`
// (componentize-js), try with
// `sluice plugin test build/{{name}}.wasm --kind {{kind}} --input samples/request.json --deadline-ms 500`
// (the JS engine starts in every fresh instance: more than the default 50 ms).
//
// WIT types in JavaScript: records are objects with camelCase fields,
// variants are { tag, val }, enums are strings, u64/s64 are BigInt, an
// absent option is undefined.

export const lifecycle = {
  // Called with the plugin's config (JSON) before every call; throwing a
  // string rejects the plugin at load time.
  init(config) {},
};
