//! The shipped deployments route every door of the gateway: the page's
//! nginx (deploy/web/nginx.conf) and the Kubernetes ingress
//! (deploy/k8s/ingress.yaml) send `/api`, `/ws` and `/v1` to the
//! gateways — `/v1` unbuffered (its answers stream as Server-Sent Events)
//! — and everything else to the page.

use std::path::PathBuf;

fn read(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The body of nginx's `location <what> {` block.
fn location<'a>(conf: &'a str, what: &str) -> &'a str {
    let start = conf
        .find(&format!("location {what} {{"))
        .unwrap_or_else(|| panic!("no `location {what}` in nginx.conf"));
    let body = &conf[start..];
    &body[..body.find('}').expect("the block ends")]
}

#[test]
fn nginx_sends_every_door_of_the_gateway_to_it() {
    let conf = read("deploy/web/nginx.conf");
    for door in ["/api/", "= /ws", "/v1/"] {
        assert!(
            location(&conf, door).contains("proxy_pass $gateway;"),
            "{door} goes to the gateway"
        );
    }
    let api = location(&conf, "/v1/");
    for setting in [
        "proxy_buffering off;",
        "proxy_read_timeout",
        "client_max_body_size",
    ] {
        assert!(api.contains(setting), "/v1 sets {setting}");
    }
    assert!(location(&conf, "= /ws").contains("proxy_buffering off;"));
}

#[test]
fn the_ingress_sends_every_door_of_the_gateway_to_it() {
    let ingress = read("deploy/k8s/ingress.yaml");
    let backend = |path: &str| {
        let start = ingress
            .find(&format!("- path: {path}\n"))
            .unwrap_or_else(|| panic!("no path {path} in the ingress"));
        let rest = &ingress[start + 1..];
        let end = rest.find("- path:").unwrap_or(rest.len());
        let service = rest[..end]
            .lines()
            .find_map(|l| l.trim().strip_prefix("name: "))
            .expect("a backend service");
        service.to_owned()
    };
    for path in ["/ws", "/api", "/v1"] {
        assert_eq!(backend(path), "gateway", "{path}");
    }
    assert_eq!(backend("/"), "web");
    assert!(ingress.contains(r#"nginx.ingress.kubernetes.io/proxy-buffering: "off""#));
}
