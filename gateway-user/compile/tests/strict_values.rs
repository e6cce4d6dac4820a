//! Addresses and names in L7 objects are read as strictly as L4 CIDRs (tollgate_model::net):
//! what a Backend points at must mean the same to every reader of the policy.
use tollgate_compile::snapshot::compile_documents;
use tollgate_model::Documents;

fn backend_errors(endpoints: &str) -> Vec<(String, String, String)> {
    let yaml = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: app, namespace: shop }}\nspec:\n  endpoints:\n{endpoints}"
    );
    // A broken Backend is left out of the revision (the rest would be served), with its
    // problems.
    let snapshot = compile_documents(&Documents::inline(&[("b.yaml", &yaml)]), None)
        .unwrap_or_else(|e| panic!("a Backend's problem refused the whole revision: {e}"));
    let errors = snapshot.acceptance.problems();
    if errors.is_empty() {
        panic!("accepted:\n{yaml}");
    }
    assert_eq!(snapshot.acceptance.left_out[0].object, "Backend/shop/app");
    errors
        .into_iter()
        .map(|e| (e.location.object, e.location.field, e.message))
        .collect()
}

#[test]
fn backend_addresses_must_be_canonical() {
    let errors = backend_errors(
        "    - ip: { address: 010.1.1.1, port: 80 }\n    - ip: { address: '::ffff:10.0.0.7', port: 80 }\n    - ip: { address: '10.1', port: 80 }\n",
    );
    let fields: Vec<&str> = errors.iter().map(|(_, f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.endpoints[0].ip.address",
            "spec.endpoints[1].ip.address",
            "spec.endpoints[2].ip.address"
        ],
        "{errors:#?}"
    );
    assert!(errors.iter().all(|(o, _, _)| o == "Backend/shop/app"));
    assert!(
        errors[0]
            .2
            .ends_with("write it in decimal without leading zeros: 10.1.1.1"),
        "{errors:#?}"
    );
    assert!(errors[1].2.ends_with("write 10.0.0.7"), "{errors:#?}");
    assert!(errors[2].2.contains("shorthand"), "{errors:#?}");
}

#[test]
fn a_backend_name_that_resolvers_read_as_an_address_is_refused() {
    // getaddrinfo (inet_aton) reads 010.1.1.1 as 8.1.1.1: given as a DNS name, it must not
    // slip past the address checks.
    let errors = backend_errors(
        "    - fqdn: { hostname: 010.1.1.1, port: 80 }\n    - fqdn: { hostname: internal.0x7f, port: 80 }\n",
    );
    let fields: Vec<&str> = errors.iter().map(|(_, f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.endpoints[0].fqdn.hostname",
            "spec.endpoints[1].fqdn.hostname"
        ],
        "{errors:#?}"
    );
    assert!(errors[0].2.contains("ends in a number"), "{errors:#?}");
}
