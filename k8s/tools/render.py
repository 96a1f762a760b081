#!/usr/bin/env python3
"""Render duet's kustomize overlays without kubectl (a small, strict subset of kustomize).

`kubectl kustomize` / `kustomize build` is the real thing and gives the same output for
these manifests; this renderer exists so CI can validate the rendered overlays on machines
without kubectl. It supports exactly the kustomization features duet's manifests use and
refuses everything else, so the two can never silently disagree:

  resources:  files (multi-document YAML) and directories holding a kustomization.yaml
  patches:    `- path: file.yaml` strategic-merge patches, one document per file; the target
              is the patch's own apiVersion/kind/metadata.name (and namespace when given)
  images:     `- name: X  newName: Y  newTag: Z`

Strategic merge, as kustomize does it for the fields used here: maps merge recursively,
`key: null` deletes, lists of containers/initContainers/env/volumes/imagePullSecrets merge
by `name`, volumeMounts by `mountPath`, container ports by `containerPort`+`protocol`;
every other list is replaced. A list item `{name: x, $patch: delete}` removes `x`.

Usage:
  render.py OVERLAY_DIR                 print the rendered multi-document YAML
  render.py OVERLAY_DIR -o FILE         write it to FILE
  render.py --sync-configmaps [--check] regenerate (or check) the ConfigMaps generated from
                                        files elsewhere in the repository: monitoring/
                                        (Prometheus config, alert rules, Grafana dashboards)
                                        into k8s/base/monitoring/, and the screening model's
                                        config (screen/models/) into k8s/base/screen/
"""

import copy
import os
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("render.py needs PyYAML: pip install pyyaml (kubernetes-validate pulls it in)")

KNOWN_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}
NAME_MERGED = {"containers", "initContainers", "env", "volumes", "imagePullSecrets", "ephemeralContainers"}


class RenderError(Exception):
    pass


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            raise RenderError(f"{path}: YAML does not parse: {e}") from e
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: every document needs apiVersion and kind")
    return docs


def res_id(doc):
    md = doc.get("metadata") or {}
    return (doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else "", doc["kind"],
            md.get("namespace"), md.get("name"))


def merge_key(field, items):
    if field in NAME_MERGED:
        return ("name",)
    if field == "volumeMounts":
        return ("mountPath",)
    if field == "ports" and items and all(isinstance(i, dict) and "containerPort" in i for i in items):
        return ("containerPort", "protocol")
    return None


def item_key(item, keys):
    out = []
    for k in keys:
        v = item.get(k)
        if k == "protocol" and v is None:
            v = "TCP"
        out.append(v)
    return tuple(out)


def smp(base, patch, field=None):
    """Strategic merge of `patch` into `base` (both plain YAML values)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if k.startswith("$"):
                raise RenderError(f"unsupported patch directive {k}")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp(out[k], v, k)
            else:
                out[k] = strip_directives(v)
        return out
    if isinstance(patch, list) and isinstance(base, list):
        keys = merge_key(field, base + patch)
        if keys is None:
            return strip_directives(patch)
        out = copy.deepcopy(base)
        for p in patch:
            if not isinstance(p, dict):
                raise RenderError(f"list {field}: merge item is not a map")
            k = item_key(p, keys)
            idx = next((i for i, b in enumerate(out) if item_key(b, keys) == k), None)
            if p.get("$patch") == "delete":
                if idx is None:
                    raise RenderError(f"list {field}: $patch delete of missing item {k}")
                del out[idx]
            elif idx is None:
                out.append(strip_directives(p))
            else:
                out[idx] = smp(out[idx], p, None)
        return out
    return strip_directives(patch)


def strip_directives(v):
    if isinstance(v, dict):
        if any(k.startswith("$") for k in v):
            raise RenderError(f"patch directive outside a merge: {list(v)}")
        return {k: strip_directives(x) for k, x in v.items()}
    if isinstance(v, list):
        return [strip_directives(x) for x in v]
    return copy.deepcopy(v)


def set_images(docs, images):
    for img in images:
        name = img.get("name")
        if not name or set(img) - {"name", "newName", "newTag"}:
            raise RenderError(f"images: only name/newName/newTag are supported: {img}")
        hits = 0
        for doc in docs:
            for c in containers_of(doc):
                ref = c.get("image", "")
                repo, tag = split_image(ref)
                if repo == name:
                    c["image"] = f"{img.get('newName', repo)}:{img.get('newTag', tag or 'latest')}"
                    hits += 1
        if hits == 0:
            raise RenderError(f"images: no container uses image {name!r}")


def split_image(ref):
    if "@" in ref:
        return ref.split("@", 1)[0], None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        return ref.rsplit(":", 1)[0], ref.rsplit(":", 1)[1]
    return ref, None


def containers_of(doc):
    spec = doc.get("spec") or {}
    tmpl = (spec.get("template") or {}).get("spec")
    if doc.get("kind") == "CronJob":
        tmpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    if doc.get("kind") == "Pod":
        tmpl = spec
    if not tmpl:
        return []
    return list(tmpl.get("containers") or []) + list(tmpl.get("initContainers") or [])


def build(directory, seen=None):
    seen = seen or set()
    directory = os.path.normpath(directory)
    if directory in seen:
        raise RenderError(f"{directory}: kustomization cycle")
    seen = seen | {directory}
    kpath = os.path.join(directory, "kustomization.yaml")
    if not os.path.exists(kpath):
        raise RenderError(f"{directory}: no kustomization.yaml")
    with open(kpath, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KNOWN_KUSTOMIZATION_KEYS
    if unknown:
        raise RenderError(f"{kpath}: unsupported keys {sorted(unknown)} (render.py supports {sorted(KNOWN_KUSTOMIZATION_KEYS)})")
    docs = []
    for r in k.get("resources") or []:
        p = os.path.join(directory, r)
        if os.path.isdir(p):
            docs.extend(build(p, seen))
        elif os.path.isfile(p):
            docs.extend(load_docs(p))
        else:
            raise RenderError(f"{kpath}: resource {r} does not exist")
    ids = {}
    for d in docs:
        i = res_id(d)
        if i in ids:
            raise RenderError(f"{kpath}: resource {i} appears twice")
        ids[i] = True
    for p in k.get("patches") or []:
        if set(p) != {"path"}:
            raise RenderError(f"{kpath}: only `- path: file` patches are supported: {p}")
        ppath = os.path.join(directory, p["path"])
        pdocs = load_docs(ppath)
        if len(pdocs) != 1:
            raise RenderError(f"{ppath}: one patch per file (found {len(pdocs)} documents)")
        for patch in pdocs:
            pmd = patch.get("metadata") or {}
            matches = [i for i, d in enumerate(docs)
                       if d["kind"] == patch["kind"] and d["apiVersion"] == patch["apiVersion"]
                       and (d.get("metadata") or {}).get("name") == pmd.get("name")
                       and ("namespace" not in pmd or (d.get("metadata") or {}).get("namespace") == pmd["namespace"])]
            if len(matches) != 1:
                raise RenderError(f"{ppath}: patch target {patch['kind']}/{pmd.get('name')} matched {len(matches)} resources")
            docs[matches[0]] = smp(docs[matches[0]], patch)
    set_images(docs, k.get("images") or [])
    return docs


def dump(docs):
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in docs)


# --- monitoring/ and screen/models/ -> ConfigMaps -------------------------------------------

class Literal(str):
    pass


def _literal(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.SafeDumper.add_representer(Literal, _literal)

HEADER = ("# GENERATED by k8s/tools/render.py --sync-configmaps from {src}.\n"
          "# Do not edit; edit the source and re-run (scripts/check-ops fails when they differ).\n")


def generated_configmaps(root):
    """{path under k8s/base: text} of every generated ConfigMap."""
    mon = os.path.join(root, "monitoring")
    out = {}

    def cm(name, src, files, labels=None, base=mon):
        data = {}
        for key, path in files:
            with open(os.path.join(base, path), encoding="utf-8") as f:
                text = f.read()
            data[key] = Literal(text if text.endswith("\n") else text + "\n")
        doc = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "duet",
                            "labels": {"app.kubernetes.io/part-of": "duet", **(labels or {})}},
               "data": data}
        return HEADER.format(src=src) + yaml.safe_dump(doc, sort_keys=False, width=1 << 20, allow_unicode=True)

    out["monitoring/prometheus-config.yaml"] = cm(
        "prometheus-config", "monitoring/prometheus-k8s.yml and alerts/*.yml",
        [("prometheus.yml", "prometheus-k8s.yml")]
        + [("alerts-" + f, os.path.join("alerts", f)) for f in sorted(os.listdir(os.path.join(mon, "alerts"))) if f.endswith(".yml")])
    out["monitoring/grafana-dashboards.yaml"] = cm(
        "grafana-dashboards", "monitoring/grafana/dashboards/*.json",
        [(f, os.path.join("grafana", "dashboards", f))
         for f in sorted(os.listdir(os.path.join(mon, "grafana", "dashboards"))) if f.endswith(".json")],
        {"grafana_dashboard": "1"})
    out["monitoring/postgres-exporter-queries.yaml"] = cm(
        "postgres-exporter-queries", "monitoring/postgres-exporter-queries.yml",
        [("queries.yaml", "postgres-exporter-queries.yml")])
    out["monitoring/prometheus-adapter-config.yaml"] = cm(
        "prometheus-adapter-config", "monitoring/prometheus-adapter.yml",
        [("config.yaml", "prometheus-adapter.yml")])
    out["screen/model-config.yaml"] = cm(
        "screen-model-config", "screen/models/nudenet-320n.toml (the model config k8s/base/screen mounts)",
        [("nudenet-320n.toml", "nudenet-320n.toml")], {"app.kubernetes.io/name": "screen"},
        base=os.path.join(root, "screen", "models"))
    return out


def sync_configmaps(root, check):
    target = os.path.join(root, "k8s", "base")
    stale = []
    for name, text in generated_configmaps(root).items():
        path = os.path.join(target, name)
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text:
            stale.append(path)
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    return stale


def main(argv):
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    try:
        if argv and argv[0] == "--sync-configmaps":
            check = "--check" in argv[1:]
            stale = sync_configmaps(root, check)
            for s in stale:
                print(("out of date: " if check else "wrote ") + os.path.relpath(s, root))
            return 1 if (check and stale) else 0
        if not argv or argv[0].startswith("-"):
            print(__doc__)
            return 2
        text = dump(build(argv[0]))
        if len(argv) >= 3 and argv[1] == "-o":
            with open(argv[2], "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    except (RenderError, OSError) as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
