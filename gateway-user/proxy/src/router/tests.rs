//! The router's own functions: hosts and redirect locations.
use super::*;
use tollgate_compile::l7::table::PathModifier;

#[test]
fn hosts_lose_their_port_case_and_trailing_dot() {
    assert_eq!(normalise_host("API.Example.com.:8080"), "api.example.com");
    assert_eq!(normalise_host("example.com"), "example.com");
    assert_eq!(normalise_host("[::1]:8080"), "[::1]");
    assert_eq!(normalise_host("[2001:DB8::1]"), "[2001:db8::1]");
    let req = Request::builder()
        .uri("http://Shop.Example.com:81/x")
        .header("host", "other")
        .body(())
        .unwrap();
    let (raw, host) = request_host(&req);
    assert_eq!(raw.unwrap(), "Shop.Example.com:81");
    assert_eq!(host, "shop.example.com");
    let req = Request::builder()
        .uri("/x")
        .header("host", "a.b:1")
        .body(())
        .unwrap();
    assert_eq!(request_host(&req).1, "a.b");
    let req = Request::builder().uri("/x").body(()).unwrap();
    let (raw, host) = request_host(&req);
    assert!(raw.is_none());
    assert_eq!(host, "");
}

fn redirect(
    scheme: Option<&str>,
    host: Option<&str>,
    port: Option<u16>,
    path: Option<PathModifier>,
) -> Redirect {
    Redirect {
        scheme: scheme.map(str::to_owned),
        hostname: host.map(str::to_owned),
        path,
        port,
        status: StatusCode::FOUND,
    }
}

#[test]
fn redirects_follow_the_gateway_api_port_rules() {
    let loc = |r: &Redirect| {
        redirect_location(
            r,
            "a.example.com",
            "/old/x",
            Some("/old"),
            Some("q=1"),
            8080,
            "http",
        )
    };
    // On an HTTPS listener, the request's scheme is https, and its port is kept.
    assert_eq!(
        redirect_location(
            &redirect(None, Some("b.example.com"), None, None),
            "a.example.com",
            "/x",
            None,
            None,
            8443,
            "https",
        ),
        "https://b.example.com:8443/x"
    );
    assert_eq!(
        redirect_location(
            &redirect(None, None, None, None),
            "a.example.com",
            "/x",
            None,
            None,
            443,
            "https",
        ),
        "https://a.example.com/x"
    );
    assert_eq!(
        loc(&redirect(Some("https"), None, None, None)),
        "https://a.example.com/old/x?q=1"
    );
    assert_eq!(
        loc(&redirect(None, None, None, None)),
        "http://a.example.com:8080/old/x?q=1"
    );
    assert_eq!(
        loc(&redirect(None, Some("b.example.com"), Some(80), None)),
        "http://b.example.com/old/x?q=1"
    );
    assert_eq!(
        loc(&redirect(Some("https"), None, Some(8443), None)),
        "https://a.example.com:8443/old/x?q=1"
    );
    assert_eq!(
        loc(&redirect(
            Some("http"),
            None,
            None,
            Some(PathModifier::Prefix("/new".into()))
        )),
        "http://a.example.com/new/x?q=1"
    );
    assert_eq!(
        loc(&redirect(
            None,
            None,
            Some(80),
            Some(PathModifier::Full("/".into()))
        )),
        "http://a.example.com/?q=1"
    );
}
