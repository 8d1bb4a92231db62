//! The source files of a new project, per language and kind, kept as real
//! files under `templates/` (so an editor highlights them) and compiled into
//! the binary. Each is the smallest policy that does something visible, so
//! an author sees where their logic goes: a throttle charging one request
//! per tenant against 60 a minute, a cache key over model and messages, a
//! semantic probe over the last message, a retry of 429s and 5xx up to
//! three attempts.
//!
//! Placeholders are `{{name}}` (the project), `{{kind}}` (the WIT interface,
//! `cache-key`), `{{world}}` (the WIT world, as the language's bindings
//! spell it) and `{{body}}` (the kind's code, inserted last, never itself
//! rendered).

use crate::policy::Slot;

use super::Lang;

/// The template files, by path under `templates/`.
macro_rules! templates {
    ($($path:literal),* $(,)?) => {
        const TEMPLATES: &[(&str, &str)] = &[
            $(($path, include_str!(concat!("templates/", $path))),)*
        ];
    };
}

templates![
    "rust/Cargo.toml",
    "rust/lib.rs",
    "rust/throttle.rs",
    "rust/cache_key.rs",
    "rust/semantic.rs",
    "rust/retry.rs",
    "rust/route.rs",
    "rust/test_header.rs",
    "rust/test_throttle.rs",
    "rust/test_cache_key.rs",
    "rust/test_semantic.rs",
    "rust/test_retry.rs",
    "rust/test_route.rs",
    "python/app.py",
    "python/throttle.py",
    "python/cache_key.py",
    "python/semantic.py",
    "python/retry.py",
    "python/route.py",
    "python/test_header.py",
    "python/test_throttle.py",
    "python/test_cache_key.py",
    "python/test_semantic.py",
    "python/test_retry.py",
    "python/test_route.py",
    "python/sluice_checks.py",
    "c/header.c",
    "c/throttle.c",
    "c/cache_key.c",
    "c/semantic.c",
    "c/retry.c",
    "c/route.c",
    "c/Makefile",
    "c/test_header.c",
    "c/test_throttle.c",
    "c/test_cache_key.c",
    "c/test_semantic.c",
    "c/test_retry.c",
    "c/test_route.c",
    "js/package.json",
    "js/header.js",
    "js/throttle.js",
    "js/cache_key.js",
    "js/semantic.js",
    "js/retry.js",
    "js/route.js",
    "js/test_header.js",
    "js/test_throttle.js",
    "js/test_cache_key.js",
    "js/test_semantic.js",
    "js/test_retry.js",
    "js/test_route.js",
];

fn template(path: &str) -> &'static str {
    TEMPLATES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| unreachable!("template {path} is listed in TEMPLATES"))
}

/// `text` with every `{{key}}` of `vars` replaced by its value.
fn render(text: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(text.to_owned(), |out, (key, value)| {
        out.replace(&format!("{{{{{key}}}}}"), value)
    })
}

/// `(relative path, contents)` of the language's sources.
pub(super) fn files(name: &str, kind: Slot, lang: Lang) -> Vec<(String, String)> {
    let iface = kind.interface();
    let body = |ext: &str| template(&format!("{lang}/{}.{ext}", kind.name()));
    match lang {
        Lang::Rust => {
            let world = format!("{iface}-plugin");
            let lib = render(
                template("rust/lib.rs"),
                &[("name", name), ("kind", iface), ("world", &world)],
            );
            vec![
                (
                    "Cargo.toml".into(),
                    render(template("rust/Cargo.toml"), &[("name", name)]),
                ),
                (
                    "src/lib.rs".into(),
                    render(&lib, &[("body", body("rs"))])
                        + template("rust/test_header.rs")
                        + template(&format!("rust/test_{}.rs", kind.name())),
                ),
            ]
        }
        Lang::Python => {
            let app = render(
                template("python/app.py"),
                &[("name", name), ("kind", iface)],
            );
            let test = render(template("python/test_header.py"), &[("name", name)])
                + template(&format!("python/test_{}.py", kind.name()));
            vec![
                ("app.py".into(), render(&app, &[("body", body("py"))])),
                ("test_app.py".into(), test),
                (
                    "sluice_checks.py".into(),
                    template("python/sluice_checks.py").to_owned(),
                ),
            ]
        }
        Lang::C => {
            let world = format!("{}_plugin", kind.name());
            let vars = [("name", name), ("kind", iface), ("world", world.as_str())];
            let source = render(template("c/header.c"), &vars) + &render(body("c"), &vars[2..]);
            let test = render(template("c/test_header.c"), &vars)
                + &render(template(&format!("c/test_{}.c", kind.name())), &vars[2..]);
            vec![
                ("src/policy.c".into(), source),
                ("test/test_policy.c".into(), test),
                ("Makefile".into(), render(template("c/Makefile"), &vars)),
            ]
        }
        Lang::Js => {
            let app = render(template("js/header.js"), &[("name", name), ("kind", iface)]);
            let test = render(template("js/test_header.js"), &[("name", name)])
                + template(&format!("js/test_{}.js", kind.name()));
            vec![
                ("app.js".into(), app + body("js")),
                ("test/app.test.js".into(), test),
                (
                    "package.json".into(),
                    render(template("js/package.json"), &[("name", name)]),
                ),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_without_leftover_placeholders() {
        for lang in Lang::ALL {
            for kind in Slot::ALL {
                for (path, text) in files("my-policy", kind, lang) {
                    for key in ["name", "kind", "world", "body"] {
                        assert!(
                            !text.contains(&format!("{{{{{key}}}}}")),
                            "{lang:?} {kind} {path}: {{{{{key}}}}} left"
                        );
                    }
                }
            }
        }
    }
}
