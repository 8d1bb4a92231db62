#!/usr/bin/env python3
"""Static checks of sluice's deployment and observability artifacts; run by
deploy/check.sh (see there). Subcommands:

  metrics                     print the metric families sluice exposes, as
                              found in host/src (see "How the exposed names
                              are found" below)
  queries FILE...             every PromQL expression in a Grafana dashboard
                              (.json) or Prometheus rule file (.yml) names
                              only exposed metrics, labels they carry, and
                              label values sluice can emit
  live URL|FILE               the names extracted from the source all appear
                              in a real /metrics scrape (a URL or a saved file)
  k8s DIR                     the manifests parse, have the required fields,
                              match the Kubernetes API schema (through the
                              `kubernetes` Python client's models, when it is
                              installed) and fit together and with the config
  config FILE                 a sluice TOML config uses only fields the config
                              structs in host/src declare

How the exposed names are found: every .rs file under host/src (test modules
cut off) is scanned for `register("name", "help", value)` and
`register_with_unit("name", "help", Unit::X, value)` calls. The registry's
prefix comes from `Registry::with_prefix("p")` in the same file (none for
`Registry::default()`), the kind from the `let` that binds `value` (a
Histogram, Counter or Gauge family or metric), the labels from the label
struct the family is typed with (its field names; for `Vec<(String,
String)>` label sets, the names the file passes to `get_or_create`), and the
label values of enum-typed labels from the enum's `Variant => "value"` arms.
The exposition rules are prometheus-client's: `prefix_name`, `_<unit>` for a
unit, `_total` for counters, `_bucket`/`_sum`/`_count` for histograms.
Families a plugin creates at run time (`sluice_plugin_<name>`, chosen by the
plugin) are not in the list: dashboards and alerts must not depend on them.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "host" / "src"
# Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = {"instance", "job"}
PROMQL_KEYWORDS = {
    "by", "without", "and", "or", "unless", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan", "atan2", "start", "end",
}


class Failure(Exception):
    pass


# --- metric extraction -------------------------------------------------------


def _rust_sources():
    for path in sorted(SRC.rglob("*.rs")):
        if path.name == "tests.rs" or "tests" in path.relative_to(SRC).parts[:-1]:
            continue
        text = path.read_text()
        cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\b", text)
        if cut:
            text = text[: cut.start()]
        yield path, text


def _enum_values() -> dict[str, list[str]]:
    """Label-value enums: `Type -> [values]` from `label_enum!` blocks and
    from `Type::Variant => "value"` match arms anywhere in host/src."""
    values: dict[str, list[str]] = {}
    for _, text in _rust_sources():
        for block in re.finditer(r"label_enum!\s*\{(.*?)\n\}", text, re.S):
            m = re.search(r"pub enum (\w+)\s*\{(.*)\}", block.group(1), re.S)
            if m:
                values[m.group(1)] = re.findall(r'(\w+)\s*=>\s*"([^"]*)"', m.group(2))
        for typ, val in re.findall(r'\b([A-Z]\w+)::\w+\s*=>\s*"([^"]*)"', text):
            values.setdefault(typ, [])
            values[typ].append(val)
    out = {}
    for typ, vals in values.items():
        flat = [v[1] if isinstance(v, tuple) else v for v in vals]
        out[typ] = sorted(set(flat))
    return out


def _struct_fields(text: str, name: str) -> dict[str, str] | None:
    m = re.search(r"struct\s+" + re.escape(name) + r"\s*\{(.*?)\n\}", text, re.S)
    if not m:
        return None
    fields = {}
    for fname, ftype in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:\s*([^,\n]+),", m.group(1), re.M):
        fields[fname] = ftype.strip()
    return fields


def exposed_metrics() -> dict[str, dict]:
    """Family name -> {kind, labels: {label: [values] or None}, series: [names]}."""
    enums = _enum_values()
    families: dict[str, dict] = {}
    reg = re.compile(
        r"\.register(?P<unit_call>_with_unit)?\(\s*"
        r'"(?P<name>[^"]+)"\s*,\s*'
        r'"(?:[^"\\]|\\.)*"\s*,\s*'
        r"(?:Unit::(?P<unit>\w+)\s*,\s*)?"
        r"(?P<value>[A-Za-z_][\w.]*?)(?:\.clone\(\))?\s*,?\s*\)",
        re.S,
    )
    for path, text in _rust_sources():
        prefixes = re.findall(r'Registry::with_prefix\(\s*"([^"]+)"\s*\)', text)
        if len(set(prefixes)) > 1:
            raise Failure(f"{path}: several registry prefixes; the extractor assumes one per file")
        # telemetry/ modules other than metrics.rs register into the
        # `sluice`-prefixed registry that metrics.rs creates and hands them.
        if not prefixes and "telemetry" in path.relative_to(SRC).parts:
            prefixes = ["sluice"]
        prefix = prefixes[0] if prefixes else ""
        for m in reg.finditer(text):
            name = m.group("name")
            full = f"{prefix}_{name}" if prefix else name
            if m.group("unit"):
                full += "_" + m.group("unit").lower()
            var = m.group("value").split(".")[-1]
            let = re.search(r"\blet\s+(?:mut\s+)?" + re.escape(var) + r"\b[^;]*;", text, re.S)
            # Or a field of the struct holding the series (`m.accepted`),
            # its type spelled out or a type alias of the same file.
            field = re.search(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?" + re.escape(var) + r"\s*:\s*(.+),\s*$", text, re.M)
            if let:
                stmt = let.group(0)
            elif field:
                stmt = field.group(1)
                alias = re.search(r"\btype\s+" + re.escape(stmt.strip()) + r"\s*=\s*([^;]+);", text)
                if alias:
                    stmt = alias.group(1)
            else:
                raise Failure(f"{path}: cannot find how `{var}` (metric {full}) is built")
            if "Histogram" in stmt:
                kind = "histogram"
            elif "Counter" in stmt:
                kind = "counter"
            elif "Gauge" in stmt:
                kind = "gauge"
            else:
                raise Failure(f"{path}: cannot tell the kind of `{var}` (metric {full})")
            labels: dict[str, list[str] | None] = {}
            fam = re.search(r"(?:Family(?:::)?<|HistogramFamily<)\s*(Vec<\(String,\s*String\)>|[\w:]+)", stmt)
            if fam and fam.group(1).startswith("Vec<"):
                for label in re.findall(
                    r"\b" + re.escape(var) + r'\s*\.get_or_create(?:_owned)?\(\s*&vec!\[\s*\(\s*"(\w+)"', text
                ):
                    labels[label] = None
            elif fam:
                fields = _struct_fields(text, fam.group(1))
                if fields is None:
                    raise Failure(f"{path}: label struct {fam.group(1)} of {full} not found")
                for fname, ftype in fields.items():
                    labels[fname] = enums.get(ftype)
            if kind == "counter":
                series = [full + "_total"]
            elif kind == "histogram":
                series = [full + s for s in ("_bucket", "_sum", "_count")]
            else:
                series = [full]
            if full in families:
                raise Failure(f"{path}: metric {full} registered twice")
            families[full] = {
                "kind": kind,
                "labels": labels,
                "series": series,
                "source": str(path.relative_to(ROOT)),
            }
    if len(families) < 10 or "sluice_requests" not in families:
        raise Failure(
            f"found only {len(families)} metric families in host/src: the extractor no longer "
            "matches how metrics are registered; update deploy/checks.py"
        )
    return families


def series_index(families):
    """Exposed series name -> (family, labels incl. `le` for buckets)."""
    index = {}
    for fam, info in families.items():
        for s in info["series"]:
            labels = dict(info["labels"])
            if s.endswith("_bucket"):
                labels["le"] = None
            index[s] = (fam, labels)
    return index


# --- PromQL ------------------------------------------------------------------


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def check_expr(expr: str, index, where: str) -> list[str]:
    errors = []
    # Selectors with matchers: name{label op "value", ...}
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}", expr):
        name = m.group(1)
        if name in PROMQL_KEYWORDS:
            continue
        if not name:
            errors.append(f"{where}: a selector without a metric name: {m.group(0)}")
            continue
        if name not in index:
            continue  # reported below
        labels = index[name][1]
        for lname, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', m.group(2)):
            if lname not in labels and lname not in TARGET_LABELS:
                errors.append(f"{where}: {name} has no label `{lname}` (it has {sorted(labels)})")
                continue
            allowed = labels.get(lname)
            if not allowed or value.startswith("$"):
                continue
            if op in ("=", "!="):
                wanted = [value]
            elif re.fullmatch(r"[\w/-]+(\|[\w/-]+)*", value):
                wanted = value.split("|")
            else:
                continue
            for v in wanted:
                if v not in allowed:
                    errors.append(f"{where}: {name}{{{lname}}} is never \"{v}\" (values: {allowed})")
    # Metric names: identifiers that are not functions, keywords, labels in
    # matchers / by-clauses, durations or Grafana variables.
    bare = _strip_strings(expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    grouping = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"\$\{?\w+\}?", "", bare)
    used = []
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare):
        ident = m.group(1)
        if ident.lower() in PROMQL_KEYWORDS or re.fullmatch(r"\d+\w*", ident):
            continue
        used.append(ident)
        if ident not in index:
            errors.append(f"{where}: metric `{ident}` is not exposed by sluice")
    known = set(TARGET_LABELS)
    for ident in used:
        if ident in index:
            known |= set(index[ident][1])
    for group in grouping:
        for label in [x.strip() for x in group.split(",") if x.strip()]:
            if label not in known:
                errors.append(f"{where}: grouping by `{label}`, which none of {sorted(set(used))} carries")
    if not used:
        errors.append(f"{where}: no metric in expression {expr!r}")
    return errors


def _grafana_exprs(dash):
    out = []

    def walk(panels, path):
        for p in panels:
            title = p.get("title", "?")
            for t in p.get("targets", []):
                out.append((f"panel {title!r} target {t.get('refId')}", t.get("expr", ""), t.get("legendFormat", "")))
            walk(p.get("panels", []), path + [title])

    walk(dash.get("panels", []), [])
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and isinstance(q, str):
            m = re.fullmatch(r"\s*label_values\(\s*([^,]+?)\s*,\s*(\w+)\s*\)\s*", q)
            if m:
                out.append((f"variable {var.get('name')}", m.group(1), "{{" + m.group(2) + "}}"))
            else:
                out.append((f"variable {var.get('name')}", q, ""))
    return out


def check_queries(files) -> list[str]:
    families = exposed_metrics()
    index = series_index(families)
    errors = []
    for f in files:
        path = pathlib.Path(f)
        if path.suffix == ".json":
            try:
                dash = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                errors.append(f"{f}: not JSON: {e}")
                continue
            exprs = _grafana_exprs(dash)
            if not exprs:
                errors.append(f"{f}: no queries found")
            ids = [p.get("id") for p in dash.get("panels", [])]
            if len(ids) != len(set(ids)):
                errors.append(f"{f}: duplicate panel ids")
            for where, expr, legend in exprs:
                where = f"{f}: {where}"
                errors += check_expr(expr, index, where)
                labels = set(TARGET_LABELS)
                for ident in re.findall(r"[a-zA-Z_:][\w:]*", _strip_strings(expr)):
                    if ident in index:
                        labels |= set(index[ident][1])
                for lab in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
                    if lab not in labels:
                        errors.append(f"{where}: legend uses `{lab}`, not a label of the query's metrics")
        else:
            import yaml

            doc = yaml.safe_load(path.read_text())
            n = 0
            for group in doc.get("groups", []):
                for rule in group.get("rules", []):
                    n += 1
                    name = rule.get("alert") or rule.get("record")
                    errors += check_expr(rule.get("expr", ""), index, f"{f}: rule {name}")
            if n == 0:
                errors.append(f"{f}: no rules found")
    return errors


def check_live(source: str) -> list[str]:
    if re.match(r"https?://", source):
        with urllib.request.urlopen(source, timeout=10) as r:
            text = r.read().decode()
    else:
        text = pathlib.Path(source).read_text()
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    errors = []
    for fam, info in exposed_metrics().items():
        if fam not in typed:
            errors.append(f"{fam} ({info['source']}) is not in the scrape")
        elif typed[fam] != info["kind"]:
            errors.append(f"{fam}: scrape says {typed[fam]}, source says {info['kind']}")
    return errors


# --- sluice config -----------------------------------------------------------


def _config_fields() -> dict[str, set[str]]:
    """Struct name -> serde field names, for the config structs."""
    out = {}
    for path in [SRC / "config" / "sections.rs", SRC / "config" / "plugins.rs", SRC / "config" / "mod.rs"] + list(
        (SRC / "state").glob("*.rs")
    ):
        if not path.exists():
            continue
        text = path.read_text()
        for m in re.finditer(r"pub struct (\w+)\s*\{(.*?)\n\}", text, re.S):
            fields = set()
            pending_rename = None
            for line in m.group(2).splitlines():
                r = re.search(r'rename\s*=\s*"([^"]+)"', line)
                if r:
                    pending_rename = r.group(1)
                if re.search(r"#\[serde\(skip\)\]", line):
                    pending_rename = "__skip__"
                f = re.match(r"\s*pub\s+(\w+)\s*:", line)
                if f:
                    if pending_rename != "__skip__":
                        fields.add(pending_rename or f.group(1))
                    pending_rename = None
            out[m.group(1)] = fields
    return out


def check_config(file: str) -> list[str]:
    import tomllib

    try:
        cfg = tomllib.loads(pathlib.Path(file).read_text())
    except tomllib.TOMLDecodeError as e:
        return [f"{file}: not TOML: {e}"]
    structs = _config_fields()
    need = ["Config", "ServerConfig", "StateSettings", "ProviderConfig", "PluginSlotConfig", "PluginLimits"]
    missing = [s for s in need if s not in structs]
    if missing:
        return [f"config structs {missing} not found in host/src: update deploy/checks.py"]
    section_struct = {
        "server": "ServerConfig", "state": "StateSettings", "providers": "ProviderConfig",
        "anonymous": "AnonymousConfig", "tenants": "TenantConfig", "cache": "CacheConfig",
        "retry": "RetryConfig", "breaker": "BreakerConfig", "semantic": "SemanticConfig",
        "telemetry": "TelemetryConfig", "plugins": "PluginsConfig",
    }
    errors = []

    def check_table(table, struct, path):
        fields = structs.get(struct)
        if fields is None:
            errors.append(f"{file}: no struct {struct} found for [{path}]")
            return
        for key in table:
            if key not in fields:
                errors.append(f"{file}: [{path}] has no field `{key}` ({struct} has {sorted(fields)})")

    check_table(cfg, "Config", "")
    for section, value in cfg.items():
        struct = section_struct.get(section)
        if not struct:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            path = f"{section}[{i}]" if isinstance(value, list) else section
            check_table(item, struct, path)
            if section == "providers" and "breaker" in item:
                check_table(item["breaker"], "BreakerOverride", f"{path}.breaker")
            if section == "plugins":
                for slot, slot_cfg in item.items():
                    check_table(slot_cfg, "PluginSlotConfig", f"plugins.{slot}")
                    if "limits" in slot_cfg:
                        check_table(slot_cfg["limits"], "PluginLimits", f"plugins.{slot}.limits")
    return errors


# --- Kubernetes manifests ----------------------------------------------------

MODELS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
}
REQUIRED = {
    "Deployment": ["spec.selector.matchLabels", "spec.template.metadata.labels", "spec.template.spec.containers"],
    "Service": ["spec.selector", "spec.ports"],
    "HorizontalPodAutoscaler": ["spec.scaleTargetRef.name", "spec.maxReplicas"],
    "PodDisruptionBudget": ["spec.selector.matchLabels"],
    "ConfigMap": [],
}
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def _get(obj, dotted):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _schema_walk(value, typ, path, errors, client):
    """Checks `value` against a kubernetes-client type name (unknown fields,
    wrong types, required fields)."""
    if typ.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, v in enumerate(value):
            _schema_walk(v, typ[5:-1], f"{path}[{i}]", errors, client)
        return
    if typ.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map")
            return
        inner = typ[typ.index(",") + 1 : -1].strip()
        for k, v in value.items():
            _schema_walk(v, inner, f"{path}.{k}", errors, client)
        return
    if typ in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[typ]) and not (typ != "bool" and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: expected {typ}, found {type(value).__name__} {value!r}")
        return
    if typ in ("object", "datetime", "date"):
        return
    cls = getattr(client, typ, None)
    if cls is None:
        errors.append(f"{path}: unknown type {typ}")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({typ})")
        return
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for key, v in value.items():
        if key not in by_json:
            errors.append(f"{path}: unknown field `{key}` for {typ}")
            continue
        _schema_walk(v, cls.openapi_types[by_json[key]], f"{path}.{key}", errors, client)
    # Required fields: the model's constructor refuses None for them.
    try:
        kwargs = {a: (value.get(j) if value.get(j) is None else "x") for a, j in cls.attribute_map.items()}
        cls(**kwargs)
    except ValueError as e:
        errors.append(f"{path}: {typ}: {e}")
    except Exception:
        pass


def check_k8s(directory: str) -> list[str]:
    import yaml

    d = pathlib.Path(directory)
    errors = []
    docs = []
    for f in sorted(d.glob("*.yaml")):
        try:
            for doc in yaml.safe_load_all(f.read_text()):
                if doc is not None:
                    docs.append((f.name, doc))
        except yaml.YAMLError as e:
            errors.append(f"{f}: not YAML: {e}")
    try:
        from kubernetes import client  # type: ignore
    except ImportError:
        client = None
        print("k8s: the `kubernetes` Python client is not installed: API schema check skipped "
              "(required fields and cross-references still checked)")
    objs = {}
    kustomization = None
    for fname, doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        if kind == "Kustomization":
            kustomization = doc
            continue
        name = _get(doc, "metadata.name")
        where = f"{fname}: {kind}/{name}"
        if not api or not kind or not name:
            errors.append(f"{fname}: a document without apiVersion, kind or metadata.name")
            continue
        if (api, kind) not in MODELS:
            errors.append(f"{where}: unexpected apiVersion/kind {api}/{kind}")
            continue
        for field in REQUIRED.get(kind, []):
            if _get(doc, field) in (None, [], {}):
                errors.append(f"{where}: missing {field}")
        if client is not None:
            _schema_walk(doc, MODELS[(api, kind)], where, errors, client)
        objs[(kind, name)] = (fname, doc)

    # The kustomization lists every manifest, and names an existing config.
    if kustomization is None:
        errors.append(f"{directory}: no kustomization.yaml")
    else:
        listed = set(kustomization.get("resources", []))
        present = {f.name for f in d.glob("*.yaml")} - {"kustomization.yaml"}
        if listed != present:
            errors.append(f"kustomization.yaml resources {sorted(listed)} != manifests {sorted(present)}")
        for gen in kustomization.get("configMapGenerator", []):
            objs[("ConfigMap", gen["name"])] = ("kustomization.yaml", {"kind": "ConfigMap", "generated": gen})
            for f in gen.get("files", []):
                if not (d / f.split("=")[-1]).is_file():
                    errors.append(f"kustomization.yaml: configMapGenerator file {f} is missing")
        if not kustomization.get("generatorOptions", {}).get("disableNameSuffixHash"):
            errors.append("kustomization.yaml: the config ConfigMap needs a fixed name "
                          "(generatorOptions.disableNameSuffixHash), or edits roll pods instead of hot-reloading")

    def need(cond, msg):
        if not cond:
            errors.append(msg)

    # --- the gateway Deployment ---
    gw = objs.get(("Deployment", "sluice"))
    need(gw is not None, "no Deployment `sluice`")
    config_path = d / "sluice.toml"
    cfg = None
    if config_path.exists():
        import tomllib

        cfg = tomllib.loads(config_path.read_text())
        errors += check_config(str(config_path))
    if gw:
        dep = gw[1]
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        sel = dep["spec"]["selector"]["matchLabels"]
        need(all(labels.get(k) == v for k, v in sel.items()), "Deployment selector does not match its pod labels")
        c = next((c for c in pod["containers"] if c["name"] == "sluice"), None)
        need(c is not None, "Deployment sluice has no container `sluice`")
        if c:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

            def probe_ok(probe, path):
                h = (c.get(probe) or {}).get("httpGet") or {}
                port = h.get("port")
                return h.get("path") == path and (port in ports or port in ports.values())

            need(probe_ok("livenessProbe", "/healthz"), "liveness probe must GET /healthz on a container port")
            need(probe_ok("readinessProbe", "/readyz"), "readiness probe must GET /readyz on a container port")
            pre = (c.get("lifecycle") or {}).get("preStop") or {}
            need(bool(pre), "no preStop hook (drain before SIGTERM)")
            pre_s = (pre.get("sleep") or {}).get("seconds", 0)
            sc = c.get("securityContext") or {}
            psc = pod.get("securityContext") or {}
            need(sc.get("readOnlyRootFilesystem") is True, "container root fs must be read-only")
            need(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
            need("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), "capabilities must drop ALL")
            need(psc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, "runAsNonRoot must be set")
            need((psc.get("runAsUser") or sc.get("runAsUser") or 0) != 0, "runAsUser must not be 0")
            env = {e["name"]: e for e in c.get("env", [])}
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            vols = {v["name"]: v for v in pod.get("volumes", [])}
            cache = (env.get("SLUICE_CACHE_DIR") or {}).get("value")
            need(cache in mounts and "emptyDir" in vols.get(mounts.get(cache, {}).get("name"), {}),
                 "SLUICE_CACHE_DIR must be set and be an emptyDir mount (compiled-plugin cache on a read-only root)")
            args = c.get("args", [])
            conf = args[args.index("--config") + 1] if "--config" in args else None
            need(conf is not None, "container args must pass --config")
            if conf:
                conf_dir = str(pathlib.PurePosixPath(conf).parent)
                m = mounts.get(conf_dir)
                need(m is not None, f"the config's directory {conf_dir} must be a volume mount (not a file)")
                if m:
                    need("subPath" not in m, "the config mount must not use subPath (subPath mounts are never updated)")
                    vol = vols.get(m["name"], {})
                    cms = [vol["configMap"]["name"]] if "configMap" in vol else [
                        s["configMap"]["name"] for s in (vol.get("projected") or {}).get("sources", []) if "configMap" in s
                    ]
                    need(bool(cms), "the config volume must come from a ConfigMap")
                    gen = objs.get(("ConfigMap", cms[0])) if cms else None
                    need(gen is not None, f"ConfigMap {cms[:1]} is not defined")
                    if gen and "generated" in gen[1]:
                        files = [f.split("=")[0] for f in gen[1]["generated"].get("files", [])]
                        need(pathlib.PurePosixPath(conf).name in files,
                             f"--config {conf} is not a key of ConfigMap {cms[0]}")
            if cfg:
                listen = cfg.get("server", {}).get("listen", "127.0.0.1:8080")
                need(listen.startswith("0.0.0.0:") or listen.startswith("[::]:"),
                     "server.listen must bind all interfaces in a pod")
                need(int(listen.rsplit(":", 1)[1]) == ports.get("http"), "server.listen port != containerPort http")
                admin = cfg.get("server", {}).get("admin_listen")
                if admin:
                    need(int(admin.rsplit(":", 1)[1]) == ports.get("admin"), "server.admin_listen port != containerPort admin")
                grace_s = cfg.get("server", {}).get("shutdown_grace_ms", 30000) / 1000
                tgps = pod.get("terminationGracePeriodSeconds", 30)
                need(tgps > pre_s + grace_s,
                     f"terminationGracePeriodSeconds ({tgps}) must exceed preStop ({pre_s}) + shutdown_grace ({grace_s})")
                state = cfg.get("state", {})
                if state.get("kind") == "redis" and state.get("url", "").startswith("env:"):
                    var = state["url"][4:]
                    url = (env.get(var) or {}).get("value", "")
                    host = re.sub(r"^rediss?://(?:[^@]*@)?", "", url).split(":")[0].split("/")[0]
                    need(("Service", host) in objs, f"{var}={url!r} does not name a Service in the manifests")
                for value in re.findall(r'"env:(\w+)"', config_path.read_text()):
                    need(value in env, f"sluice.toml reads env:{value}, which the container does not set")
            res = c.get("resources", {})
            need("cpu" in (res.get("requests") or {}), "a CPU request is needed for the HPA")
        # Services point at pods that exist, on ports they have.
        for (kind, name), (fname, obj) in objs.items():
            if kind != "Service":
                continue
            sel = obj["spec"]["selector"]
            targets = [o for (k, _), (_, o) in objs.items() if k == "Deployment"
                       and all(o["spec"]["template"]["metadata"]["labels"].get(a) == b for a, b in sel.items())]
            need(bool(targets), f"Service {name} selects no Deployment's pods")
            for t in targets:
                cports = {p.get("name"): p["containerPort"] for cc in t["spec"]["template"]["spec"]["containers"]
                          for p in cc.get("ports", [])}
                for p in obj["spec"]["ports"]:
                    tp = p.get("targetPort", p["port"])
                    need(tp in cports or tp in cports.values(), f"Service {name} targetPort {tp} is not a container port")
    hpa = objs.get(("HorizontalPodAutoscaler", "sluice"))
    need(hpa is not None and hpa[1]["spec"]["scaleTargetRef"]["name"] == "sluice"
         and hpa[1]["spec"]["scaleTargetRef"]["kind"] == "Deployment", "an HPA must scale Deployment sluice")
    pdb = objs.get(("PodDisruptionBudget", "sluice"))
    need(pdb is not None, "no PodDisruptionBudget sluice")
    if pdb and gw:
        labels = gw[1]["spec"]["template"]["metadata"]["labels"]
        need(all(labels.get(k) == v for k, v in pdb[1]["spec"]["selector"]["matchLabels"].items()),
             "PDB selector does not match the gateway pods")
    need(any(k == "Deployment" and "redis" in n for k, n in objs), "no Redis Deployment")
    need(any(k == "Service" and "redis" in n for k, n in objs), "no Redis Service")
    return errors


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "metrics":
            for fam, info in sorted(exposed_metrics().items()):
                labels = ",".join(sorted(info["labels"]))
                print(f"{' '.join(info['series'])}\t{info['kind']}\t{{{labels}}}\t{info['source']}")
            return 0
        if cmd == "queries":
            errors = check_queries(args)
        elif cmd == "live":
            errors = check_live(args[0])
        elif cmd == "k8s":
            errors = check_k8s(args[0])
        elif cmd == "config":
            errors = check_config(args[0])
        else:
            print(f"unknown subcommand {cmd}", file=sys.stderr)
            return 2
    except Failure as e:
        errors = [str(e)]
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
