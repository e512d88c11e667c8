//! The configuration's loading and checks.

#![allow(clippy::result_large_err)] // figment's Jail API returns its own large error

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};

use super::*;

#[test]
fn environment_overrides_file_and_defaults() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "kith.toml",
            "server_name = \"file.test\"\n[registration]\nmode = \"open\"\n",
        )?;
        jail.set_env("KITH_DATABASE__PATH", "/tmp/elsewhere");
        jail.set_env("KITH_REGISTRATION__TOKENS", "[\"a\", \"b\"]");
        jail.set_env("KITH_CONFIG", "ignored-here");
        jail.set_env("KITH_CI_TARGET", "not an option");
        let config = Config::load(Some(Path::new("kith.toml"))).map_err(figment::Error::from)?;
        assert_eq!(config.server_name, "file.test");
        assert_eq!(config.registration.mode, RegistrationMode::Open);
        assert_eq!(config.registration.tokens, ["a", "b"]);
        assert_eq!(config.database.path, PathBuf::from("/tmp/elsewhere"));
        assert_eq!(config.listen.client.port(), 8008);
        Ok(())
    });
}

#[test]
fn the_example_file_is_valid_and_shows_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let example: Config = Figment::new()
        .merge(Toml::file(&path))
        .extract()
        .expect("config.example.toml parses");
    let shown = serde_json::to_value(&example).unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    assert_eq!(
        shown, defaults,
        "config.example.toml differs from the defaults"
    );
}

#[test]
fn identity_providers_come_from_the_environment_and_are_checked() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "KITH_SSO__PROVIDERS",
            r#"[{id="corp", name="Corp", issuer="https://id.corp.example/", client_id="kith", client_secret="s"}]"#,
        );
        let config = Config::load(None).map_err(figment::Error::from)?;
        let provider = &config.sso.providers[0];
        assert_eq!(provider.id, "corp");
        assert_eq!(provider.localpart_claim, "preferred_username");
        assert!(provider.allow_registration);
        // http:// only on loopback.
        jail.set_env(
            "KITH_SSO__PROVIDERS",
            r#"[{id="corp", issuer="http://id.corp.example/", client_id="kith"}]"#,
        );
        assert!(Config::load(None).is_err());
        jail.set_env(
            "KITH_SSO__PROVIDERS",
            r#"[{id="local", issuer="http://127.0.0.1:9000", client_id="kith"}]"#,
        );
        assert!(Config::load(None).is_ok());
        jail.set_env(
            "KITH_SSO__PROVIDERS",
            r#"[{id="a b", issuer="https://x.example", client_id="kith"}]"#,
        );
        assert!(Config::load(None).is_err());
        jail.set_env("KITH_SSO__PROVIDERS", "[]");
        // Trusted clients: whole path segments of the same origin only.
        jail.set_env(
            "KITH_SSO__ALLOWED_REDIRECT_URLS",
            r#"["https://app.example.org"]"#,
        );
        assert!(Config::load(None).is_err(), "a prefix must end with /");
        jail.set_env(
            "KITH_SSO__ALLOWED_REDIRECT_URLS",
            r#"["https://app.example.org/web/"]"#,
        );
        let sso = Config::load(None).map_err(figment::Error::from)?.sso;
        assert!(sso.trusts("https://app.example.org/web/#/login"));
        assert!(sso.trusts("https://app.example.org:443/web/x?y=1"));
        assert!(!sso.trusts("https://app.example.org.evil.test/web/"));
        assert!(!sso.trusts("https://app.example.org/webevil/"));
        assert!(!sso.trusts("http://app.example.org/web/"));
        assert!(!sso.trusts("https://app.example.org:8443/web/"));
        Ok(())
    });
}

#[test]
fn rejects_unknown_options_and_bad_server_names() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("bad.toml", "[listen]\nclinet = \"127.0.0.1:1\"\n")?;
        assert!(Config::load(Some(Path::new("bad.toml"))).is_err());
        jail.set_env("KITH_SERVER_NAME", "not a name");
        assert!(Config::load(None).is_err());
        Ok(())
    });
}
