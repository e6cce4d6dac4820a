//! YAML of the L7 objects, as a user would write them (the same shapes as the end-to-end
//! tests' `tests/src/l7.rs`). Objects without a namespace are in `default`.

/// A Gateway `edge` with one HTTP listener per `(name, port, hostname)`, taking routes from
/// every namespace.
pub fn gateway(listeners: &[(&str, u16, Option<&str>)]) -> String {
    let mut y = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n",
    );
    for (name, port, host) in listeners {
        y.push_str(&format!(
            "    - {{ name: {name}, port: {port}, protocol: HTTP, allowedRoutes: {{ namespaces: {{ from: All }} }}"
        ));
        if let Some(h) = host {
            y.push_str(&format!(", hostname: '{h}'"));
        }
        y.push_str(" }\n");
    }
    y
}

/// A Backend `name` in namespace `default` with endpoints on 127.0.0.1 at `ports`; `extra`
/// is more of its spec (indented two spaces).
pub fn backend(name: &str, ports: &[u16], extra: &str) -> String {
    backend_in("default", name, ports, extra)
}

/// As [`backend`], in namespace `ns`.
pub fn backend_in(ns: &str, name: &str, ports: &[u16], extra: &str) -> String {
    let mut y = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  endpoints:\n"
    );
    for p in ports {
        y.push_str(&format!("    - ip: {{ address: 127.0.0.1, port: {p} }}\n"));
    }
    y.push_str(extra);
    y
}

/// An HTTPRoute `name` in `default` attached to Gateway `edge`, with `spec` (indented two
/// spaces) after its parentRefs.
pub fn route(name: &str, spec: &str) -> String {
    route_meta(&format!("name: {name}"), spec)
}

/// An HTTPRoute with `metadata: { <meta> }` (name, namespace, creationTimestamp...) attached
/// to Gateway `default/edge`.
pub fn route_meta(meta: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ {meta} }}\nspec:\n  parentRefs: [{{ name: edge, namespace: default }}]\n{spec}"
    )
}

/// A backendRefs entry for Backend `name`.
pub fn to(name: &str) -> String {
    format!("{{ group: tollgate.dev, kind: Backend, name: {name} }}")
}

/// A policy (`AuthPolicy`, `RateLimitPolicy`, `BackendTrafficPolicy`) `name` targeting route
/// `route`, with `spec` (indented two spaces) after its targetRefs.
pub fn policy(kind: &str, name: &str, route: &str, spec: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: {kind}\nmetadata: {{ name: {name} }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route} }}]\n{spec}"
    )
}

/// Joins documents into one multi-document file.
pub fn documents(docs: &[&str]) -> String {
    docs.join("---\n")
}

/// Gateway `edge` on `port`, Backend `app` at `backend`, and route `app` (every path) to it,
/// followed by `more` documents.
pub fn one_route(port: u16, backend: u16, more: &[&str]) -> String {
    let g = gateway(&[("http", port, None)]);
    let b = self::backend("app", &[backend], "");
    let r = route(
        "app",
        &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
    );
    let mut docs: Vec<&str> = vec![&g, &b, &r];
    docs.extend_from_slice(more);
    documents(&docs)
}

/// As [`one_route`], with route `free` (`/free`) to the same Backend, which policies on `app` do
/// not cover.
pub fn app_and_free(port: u16, backend: u16, more: &[&str]) -> String {
    let free = route(
        "free",
        &format!(
            "  rules:\n    - matches: [{{ path: {{ value: /free }} }}]\n      backendRefs: [{}]\n",
            to("app")
        ),
    );
    let mut docs: Vec<&str> = vec![&free];
    docs.extend_from_slice(more);
    one_route(port, backend, &docs)
}
