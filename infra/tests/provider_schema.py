"""Provider-schema check of infra/**/*.tf: the closest thing to `terraform validate` that runs
without downloading a provider.

The schema comes from the jsii assemblies of the prebuilt CDK Terrain providers on npm
(@cdktn/provider-aws, @cdktn/provider-archive; infra/check.sh pins the versions). An assembly
describes, for every resource and data source, its config struct (arguments and nested blocks,
with `optional` marking what is not required) and its class (every attribute it exposes,
computed ones included). Each config property's docs link to the registry page anchor of the
Terraform name, e.g. `...docs/resources/db_proxy#engine_family DbProxy#engine_family`, which
is how names are mapped back from camelCase.

For every `resource` and `data` block it reports:
  - an argument or nested block the schema does not have,
  - a required argument or block that is not set,
  - an attribute the provider computes and does not accept (set as if it were an argument),
  - a nested block written as an attribute or the reverse,
  - a reference `type.name.attribute` to an undeclared block or an attribute its type lacks,
recursing into nested blocks and `dynamic` blocks' content. Meta-arguments (count, for_each,
depends_on, provider, lifecycle, provisioner, connection) are Terraform's, not the provider's.

  python provider_schema.py build OUT.json ASSEMBLY.jsii [ASSEMBLY.jsii ...]
  python provider_schema.py check SCHEMA.json DIR_OR_FILE [...]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

META_ARGUMENTS = {"count", "for_each", "depends_on", "provider"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}

# terraform_data belongs to Terraform itself (the built-in terraform.io/builtin/terraform
# provider ships inside the CLI, not in any package), so its small schema is written here.
BUILTIN_STRUCTS = {
    "builtin:terraform_data": {
        "args": {"input": False, "triggers_replace": False},
        "blocks": {},
        "computed": ["id", "output"],
    }
}
BUILTIN = {"resource": {"terraform_data": "builtin:terraform_data"}, "data": {}}

_ANCHOR = re.compile(r"#([A-Za-z0-9_]+) [A-Za-z0-9]+#\1\}")
_PROVIDER_LINK = re.compile(r"registry\.terraform\.io/providers/([a-z0-9-]+/[a-z0-9-]+)/([0-9][^/]*)/docs/")
_TYPE_LINK = re.compile(r"/docs/(resources|data-sources)/[A-Za-z0-9_]+ ([a-z0-9_]+)\}")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _loose(name: str) -> str:
    """Computed-only attributes have no registry anchor, so their names come from camelCase,
    which cannot tell output_base64sha256 from output_base64_sha256: compare without '_'."""
    return name.replace("_", "")


def _struct_fqn(type_ref: dict) -> str | None:
    """The struct a property holds (a nested block or object), or None for primitives/maps."""
    refs = type_ref["union"]["types"] if "union" in type_ref else [type_ref]
    for ref in refs:
        if "collection" in ref:
            ref = ref["collection"]["elementtype"]
        fqn = ref.get("fqn")
        if fqn and not fqn.startswith("cdktn."):
            return fqn
    return None


class _Builder:
    """Flattens the structs into one table (schema["structs"], by fqn): nested blocks refer
    to their struct by key, since some structs contain themselves."""

    def __init__(self, types: dict, structs: dict):
        self.types = types
        self.structs = structs

    def struct(self, fqn: str, output_ref: str | None) -> str:
        if fqn in self.structs:
            return fqn
        node: dict = {"args": {}, "blocks": {}, "computed": []}
        self.structs[fqn] = node  # registered before recursing: a struct may contain itself
        for prop in self.types[fqn].get("properties", []):
            docs = prop.get("docs", {})
            text = docs.get("summary", "") + " " + docs.get("remarks", "")
            match = _ANCHOR.search(text)
            name = match.group(1) if match else _snake(prop["name"])
            required = not prop.get("optional", False)
            inner = _struct_fqn(prop["type"])
            if inner and docs.get("summary", "").endswith(" block."):
                node["blocks"][name] = {"required": required, "ref": self.struct(inner, inner + "OutputReference")}
            else:
                node["args"][name] = required
        node["computed"] = self.computed(output_ref, node)
        return fqn

    def computed(self, class_fqn: str | None, node: dict) -> list[str]:
        """Attributes the class exposes that the config does not accept."""
        cls = self.types.get(class_fqn or "")
        if not cls:
            return []
        accepted = set(node["args"]) | set(node["blocks"])
        names = set()
        for prop in cls.get("properties", []):
            if prop.get("static") or prop["name"].endswith("Input") or prop["name"] in ("fqn", "creationStack", "internalValue"):
                continue
            name = _snake(prop["name"])
            if name not in accepted:
                names.add(name)
        return sorted(names)


def build(assemblies: list[Path]) -> dict:
    schema = {
        "resource": dict(BUILTIN["resource"]),
        "data": dict(BUILTIN["data"]),
        "structs": dict(BUILTIN_STRUCTS),
        "providers": {},
    }
    for path in assemblies:
        assembly = json.loads(Path(path).read_text())
        types = assembly["types"]
        builder = _Builder(types, schema["structs"])
        schema["providers"][assembly["name"]] = {
            "package_version": assembly["version"],
            "provider": "?",
            "provider_version": "?",
        }
        for fqn, cls in types.items():
            base = cls.get("base")
            if base not in ("cdktn.TerraformResource", "cdktn.TerraformDataSource"):
                continue
            link = _TYPE_LINK.search(cls.get("docs", {}).get("summary", ""))
            if not link:
                continue
            source = _PROVIDER_LINK.search(cls["docs"]["summary"])
            if source:
                schema["providers"][assembly["name"]].update(provider=source.group(1), provider_version=source.group(2))
            kind = "resource" if link.group(1) == "resources" else "data"
            tf_type = link.group(2)
            if kind == "data" and tf_type.startswith("data_"):
                tf_type = tf_type[len("data_"):]
            params = cls["initializer"]["parameters"]
            config = next(p for p in params if p["name"] == "config")["type"]["fqn"]
            schema[kind][tf_type] = builder.struct(config, fqn)
    return schema


# ----------------------------------------------------------------------------- checking

def _unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _is_block(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def _check_body(body: dict, node: dict, where: str, top: bool, structs: dict) -> list[str]:
    out = []
    present: set[str] = set()
    for raw_key, value in body.items():
        key = _unquote(raw_key)
        if key in ("__is_block__", "__comments__"):
            continue
        if top and (key in META_ARGUMENTS or key in META_BLOCKS):
            continue
        if key == "dynamic" and isinstance(value, list):
            for dyn in value:
                for raw_label, dyn_body in dyn.items():
                    label = _unquote(raw_label)
                    if label in ("__is_block__", "__comments__") or not isinstance(dyn_body, dict):
                        continue
                    present.add(label)
                    if label not in node["blocks"]:
                        out.append(f"{where}: unknown nested block \"{label}\" (dynamic)")
                        continue
                    inner = structs[node["blocks"][label]["ref"]]
                    for content in dyn_body.get("content", []):
                        out += _check_body(content, inner, f"{where}.{label}", False, structs)
            continue
        present.add(key)
        if key in node["blocks"]:
            if not _is_block(value):
                out.append(f"{where}: \"{key}\" is a nested block, not an argument")
                continue
            inner = structs[node["blocks"][key]["ref"]]
            for item in value:
                out += _check_body(item, inner, f"{where}.{key}", False, structs)
        elif key in node["args"]:
            if _is_block(value):
                out.append(f"{where}: \"{key}\" is an argument, not a nested block")
        elif _loose(key) in {_loose(c) for c in node["computed"]}:
            out.append(f"{where}: \"{key}\" is computed by the provider and cannot be set")
        elif _is_block(value):
            out.append(f"{where}: unknown nested block \"{key}\"")
        else:
            out.append(f"{where}: unknown argument \"{key}\"")
    for name, required in node["args"].items():
        if required and name not in present:
            out.append(f"{where}: required argument \"{name}\" is not set")
    for name, block in node["blocks"].items():
        if block["required"] and name not in present:
            out.append(f"{where}: required block \"{name}\" is not set")
    return out


_REFERENCE = re.compile(
    r"(?<![\w.])(data\.)?((?:aws|archive)_[a-z0-9_]+|terraform_data)\.([a-zA-Z_][\w-]*)(?:\[[^\]\[]*\])?\.([a-z_][a-z0-9_]*)"
)


def _strip_comments(text: str) -> str:
    return re.sub(r"(?m)(^|\s)(#|//).*$", r"\1", text)


def declared(docs: dict[str, dict]) -> set[tuple[str, str, str]]:
    out = set()
    for doc in docs.values():
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for raw_type, named in block.items():
                    for raw_name in named:
                        out.add((kind, _unquote(raw_type), _unquote(raw_name)))
    return out


def check_references(text: str, filename: str, schema: dict, known: set[tuple[str, str, str]]) -> list[str]:
    """Every `type.name.attribute` (and `data.type.name.attribute`) names a block that is
    declared and an attribute its type has, as `terraform validate` would check."""
    out = []
    for m in _REFERENCE.finditer(_strip_comments(text)):
        kind = "data" if m.group(1) else "resource"
        tf_type, name, attr = m.group(2), m.group(3), m.group(4)
        ref = schema[kind].get(tf_type)
        if ref is None:
            if kind == "resource" and tf_type in schema["data"]:
                out.append(f"{filename}: {tf_type}.{name} is a data source: write data.{tf_type}.{name}")
            continue  # an unknown type is reported where it is declared
        shown = f"{'data.' if kind == 'data' else ''}{tf_type}.{name}"
        if (kind, tf_type, name) not in known:
            out.append(f"{filename}: reference to undeclared {shown}")
            continue
        node = schema["structs"][ref]
        names = {_loose(n) for n in list(node["args"]) + list(node["blocks"]) + node["computed"]} | {"id"}
        if _loose(attr) not in names:
            out.append(f"{filename}: {shown} has no attribute \"{attr}\"")
    return sorted(set(out))


def check_document(doc: dict, schema: dict, filename: str) -> list[str]:
    out = []
    for kind in ("resource", "data"):
        for block in doc.get(kind, []):
            for raw_type, named in block.items():
                tf_type = _unquote(raw_type)
                for raw_name, body in named.items():
                    name = _unquote(raw_name)
                    where = f"{filename}: {'data.' if kind == 'data' else ''}{tf_type}.{name}"
                    ref = schema[kind].get(tf_type)
                    if ref is None:
                        out.append(f"{where}: the provider has no {'data source' if kind == 'data' else 'resource'} type \"{tf_type}\"")
                        continue
                    out += _check_body(body, schema["structs"][ref], where, True, schema["structs"])
    return out


def tf_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            # fixtures/ holds deliberately broken files that the tests feed to the checker.
            files += sorted(p for p in path.rglob("*.tf") if not {".terraform", "fixtures"} & set(p.relative_to(path).parts))
        else:
            files.append(path)
    return files


def check_paths(paths: list[Path], schema: dict, root: Path | None = None) -> list[str]:
    import hcl2  # only the check needs python-hcl2; build runs with the standard library

    out = []
    docs, texts = {}, {}
    for path in tf_files(paths):
        shown = str(path.relative_to(root) if root and path.is_relative_to(root) else path)
        texts[shown] = path.read_text()
        with path.open() as fh:
            docs[shown] = hcl2.load(fh)
    known = declared(docs)
    for shown, doc in docs.items():
        out += check_document(doc, schema, shown)
        out += check_references(texts[shown], shown, schema, known)
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[1] == "build":
        schema = build([Path(p) for p in argv[3:]])
        Path(argv[2]).write_text(json.dumps(schema, separators=(",", ":")))
        print(f"{len(schema['resource'])} resource and {len(schema['data'])} data source types from "
              + ", ".join(f"{k}@{v['package_version']} ({v['provider']} {v['provider_version']})" for k, v in schema["providers"].items()))
        return 0
    if len(argv) >= 4 and argv[1] == "check":
        schema = json.loads(Path(argv[2]).read_text())
        paths = [Path(p) for p in argv[3:]]
        violations = check_paths(paths, schema, Path.cwd())
        for v in violations:
            print(v)
        print(f"{len(tf_files(paths))} files, {len(violations)} schema violations")
        return 1 if violations else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
