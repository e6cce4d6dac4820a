"""Validates Tollgate's example custom resources against the CRDs' openAPIV3Schema.

Run by `cargo xtask test` (xtask/src/manifests.rs) with the Python of its venv, which holds
`jsonschema` and PyYAML (both come with kubernetes-validate).

    python validate_crs.py [--gateway-api-out FILE] CRD_DIR FILE...

Every object whose apiVersion is in the tollgate.dev group is checked against the schema of its
kind: YAML files whole, Markdown files by their ```yaml blocks. The Gateway API's objects
(gateway.networking.k8s.io) are written to FILE as JSON, for `gateway-api-types/validate.mjs`
to check against the Gateway API's own schemas; objects of other groups are counted and skipped. The API server
adds apiVersion, kind and metadata checks of its own; the schema is the CRD's as written.
Prints one line per problem (file, object, field path), then `N passed, N failed`; exit 1 on
any problem.
"""

import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

GROUP = "tollgate.dev"
GATEWAY_API = "gateway.networking.k8s.io"


def strict(schema, root=True):
    """The schema with unknown fields refused, as `kubectl apply` (field validation Strict, the
    default since Kubernetes 1.27) refuses them: every object schema that lists its properties
    and does not preserve unknown fields gets additionalProperties: false. The root also
    accepts apiVersion, kind and metadata, which the API server checks itself."""
    if isinstance(schema, dict):
        schema = {k: strict(v, False) for k, v in schema.items()}
        props = schema.get("properties")
        if (
            isinstance(props, dict)
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            if root:
                props = dict(props)
                for field in ("apiVersion", "kind"):
                    props.setdefault(field, {"type": "string"})
                props.setdefault("metadata", {"type": "object"})
                schema["properties"] = props
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(s, False) for s in schema]
    return schema


def crd_schemas(crd_dir):
    """(apiVersion, kind) -> the version's openAPIV3Schema, from every CRD file in crd_dir."""
    schemas = {}
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def objects(path):
    """(where, object) for every YAML document of a file, or of a Markdown file's yaml blocks."""
    text = path.read_text()
    if path.suffix == ".md":
        for match in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.M | re.S):
            line = text.count("\n", 0, match.start()) + 2
            for doc in yaml.safe_load_all(match.group(1)):
                yield f"{path}:{line}", doc
    else:
        for doc in yaml.safe_load_all(text):
            yield str(path), doc


def main(argv):
    gateway_api_out = None
    if len(argv) > 2 and argv[1] == "--gateway-api-out":
        gateway_api_out = argv[2]
        argv = argv[:1] + argv[3:]
    schemas = crd_schemas(argv[1])
    passed = failed = skipped = 0
    gateway_api = []
    for name in argv[2:]:
        try:
            found = list(objects(Path(name)))
        except yaml.YAMLError as error:
            print(f"{name}: not YAML: {error}")
            failed += 1
            continue
        for where, obj in found:
            if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
                continue
            api_version, kind = obj["apiVersion"], obj["kind"]
            if not str(api_version).startswith(GROUP + "/"):
                if str(api_version).startswith(GATEWAY_API + "/"):
                    gateway_api.append({"where": where, "object": obj})
                else:
                    skipped += 1
                continue
            label = f"{where}: {kind}/{obj.get('metadata', {}).get('name', '?')}"
            schema = schemas.get((api_version, kind))
            if schema is None:
                print(f"{label}: no CRD defines {kind} in {api_version}")
                failed += 1
                continue
            validator = jsonschema.Draft4Validator(schema)
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            for error in errors:
                field = ".".join(str(p) for p in error.absolute_path) or "(object)"
                print(f"{label}: {field}: {error.message}")
            if errors:
                failed += 1
            else:
                passed += 1
    if gateway_api_out is not None:
        with open(gateway_api_out, "w") as out:
            json.dump(gateway_api, out, default=str)
        print(f"Gateway API objects, checked by validate.mjs: {len(gateway_api)}")
    print(f"objects of other groups skipped (no schema here): {skipped}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
