//! Issue 15, part 2: the `proxy` key of an integration: its forms, its validation, and its password
//! kept a secret.

use integration_config::{Config, ProxyConfig, ProxyServer, Secret};

fn proxy_of(toml: &str) -> ProxyConfig {
    let config = Config::from_toml_str(&format!(
        "[integrations.a]\nbase_url = \"https://a.example\"\n{toml}\n"
    ))
    .unwrap();
    config.integrations["a"].proxy.clone()
}

fn errors_of(toml: &str) -> String {
    Config::from_toml_str(&format!(
        "[integrations.a]\nbase_url = \"https://a.example\"\n{toml}\n"
    ))
    .unwrap_err()
    .to_string()
}

#[test]
fn absent_means_the_environment_and_none_or_off_ignore_it() {
    assert_eq!(proxy_of(""), ProxyConfig::Environment);
    assert_eq!(
        proxy_of("proxy = \"environment\""),
        ProxyConfig::Environment
    );
    assert_eq!(proxy_of("proxy = \"none\""), ProxyConfig::Off);
    assert_eq!(proxy_of("proxy = \"off\""), ProxyConfig::Off);
}

#[test]
fn a_url_string_or_a_table_names_a_proxy_of_its_own() {
    let short = proxy_of("proxy = \"http://proxy.corp:3128\"");
    let ProxyConfig::Server(server) = &short else {
        panic!("{short:?}")
    };
    assert_eq!(server.url.as_str(), "http://proxy.corp:3128/");
    assert!(server.username.is_none() && server.no_proxy.is_empty());

    let full = proxy_of(
        "proxy = { url = \"http://proxy.corp:3128\", username = \"svc\", password = \"${env:PATH}\", \
         no_proxy = [\".corp\", \"10.0.0.0/8\"] }",
    );
    let ProxyConfig::Server(server) = &full else {
        panic!("{full:?}")
    };
    assert_eq!(server.username.as_deref(), Some("svc"));
    assert_eq!(server.no_proxy, [".corp", "10.0.0.0/8"]);
    let built = ProxyServer::new("http://proxy.corp:3128".parse().unwrap())
        .with_credentials("svc", Secret::parse("${env:PATH}"))
        .with_no_proxy([".corp", "10.0.0.0/8"]);
    assert_eq!(full, ProxyConfig::Server(built));
}

#[test]
fn defaults_apply_the_proxy_to_every_integration() {
    let config = Config::from_toml_str(
        "[defaults]\nproxy = \"none\"\n[integrations.a]\nbase_url = \"https://a.example\"\n",
    )
    .unwrap();
    assert_eq!(config.integrations["a"].proxy, ProxyConfig::Off);
}

#[test]
fn bad_proxies_are_refused_with_their_path() {
    let shown = errors_of("proxy = \"nonsense\"");
    assert!(shown.contains("integrations.a.proxy"), "{shown}");
    assert!(shown.contains("\"none\""), "{shown}");

    let shown = errors_of(
        "proxy = { url = \"socks5://proxy:1080/x\", username = \"a:b\", no_proxy = [\"a, b\", \"\"] }",
    );
    for expected in [
        "integrations.a.proxy.url: must use http or https, not \"socks5\"",
        "integrations.a.proxy.url: must be a scheme, a host and a port only",
        "integrations.a.proxy.password: is required with proxy.username",
        "integrations.a.proxy.no_proxy[0]: must be one host, domain, IP address or CIDR block",
        "integrations.a.proxy.no_proxy[1]: must not be empty",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }

    let shown = errors_of("proxy = { url = \"http://proxy\", unknown = 1 }");
    assert!(shown.contains("unknown"), "{shown}");
}

#[test]
fn credentials_in_the_proxy_url_are_refused_without_being_echoed() {
    let shown = errors_of("proxy = \"http://user:hunter2-proxy@proxy.corp:3128\"");
    assert!(
        shown.contains("integrations.a.proxy.url: must not carry credentials"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2-proxy"), "{shown}");
}

#[test]
fn the_proxy_password_is_a_secret_never_shown() {
    let config = Config::from_toml_str(
        "[defaults]\nproxy = { url = \"http://proxy.corp:3128\", username = \"svc\", password = \"pw-literal-0123\" }\n\
         [integrations.a]\nbase_url = \"https://a.example\"\n",
    )
    .unwrap();
    let integration = &config.integrations["a"];
    let paths: Vec<_> = integration
        .secrets()
        .iter()
        .map(|(path, _)| *path)
        .collect();
    assert_eq!(paths, ["proxy.password"]);
    for shown in [
        format!("{config:?}"),
        toml::to_string(&config).unwrap(),
        serde_json::to_string(integration).unwrap(),
    ] {
        assert!(!shown.contains("pw-literal-0123"), "{shown}");
    }
}

#[test]
fn a_proxy_survives_a_round_trip_through_json_as_the_store_keeps_it() {
    for toml in [
        "proxy = \"none\"",
        "proxy = { url = \"http://proxy.corp:3128\", username = \"svc\", password = \"${env:PATH}\", no_proxy = [\".corp\"] }",
    ] {
        let config = Config::from_toml_str(&format!(
            "[integrations.a]\nbase_url = \"https://a.example\"\n{toml}\n"
        ))
        .unwrap();
        let integration = &config.integrations["a"];
        let json = serde_json::to_value(integration).unwrap();
        let back: integration_config::IntegrationConfig = serde_json::from_value(json).unwrap();
        assert_eq!(&back, integration);
    }
}
