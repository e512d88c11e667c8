//! The federation listener's TLS: the configured certificate, or a self-signed one kept in
//! the data directory (made on first start, valid for the server name's host, 127.0.0.1
//! and localhost), for tests and LAN peers that do not verify certificates.

use std::path::PathBuf;

use axum_server::tls_rustls::RustlsConfig;

use crate::config::Config;

pub async fn rustls_config(config: &Config) -> Result<RustlsConfig, String> {
    let (certificate, key) = match (&config.tls.certificate, &config.tls.private_key) {
        (Some(certificate), Some(key)) => (certificate.clone(), key.clone()),
        _ => self_signed(config)?,
    };
    RustlsConfig::from_pem_file(&certificate, &key)
        .await
        .map_err(|e| {
            format!(
                "cannot use the TLS certificate {} and key {}: {e}",
                certificate.display(),
                key.display()
            )
        })
}

fn self_signed(config: &Config) -> Result<(PathBuf, PathBuf), String> {
    let certificate = config.database.path.join("federation.crt");
    let key = config.database.path.join("federation.key");
    if certificate.exists() && key.exists() {
        return Ok((certificate, key));
    }
    let host = match config.server_name.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => config.server_name.as_str(),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut names = vec![host.to_owned()];
    for name in ["127.0.0.1", "localhost"] {
        if name != host {
            names.push(name.to_owned());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&key, generated.signing_key.serialize_pem())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&key, private)
            .map_err(|e| format!("cannot restrict {}: {e}", key.display()))?;
    }
    write(&certificate, generated.cert.pem())?;
    tracing::warn!(
        certificate = %certificate.display(),
        "no [tls] certificate is configured: made a self-signed one for the federation \
         listener; peers that verify certificates will refuse it (set tls.certificate and \
         tls.private_key, or put a TLS proxy in front, for the internet)"
    );
    Ok((certificate, key))
}
