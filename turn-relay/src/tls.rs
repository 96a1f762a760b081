//! TLS for TURN over TLS: loading PEM files and generating a self-signed
//! pair for `duet up`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TurnError;

/// Writes `cert.pem` and `key.pem` for `hosts` (DNS names or IP addresses)
/// into `dir` unless both already exist; returns their paths.
pub fn generate_self_signed(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TurnError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(|e| TurnError::io(format!("creating {}", dir.display()), e))?;
    let names: Vec<String> = if hosts.is_empty() {
        vec!["localhost".to_string()]
    } else {
        hosts.to_vec()
    };
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| TurnError::CertGen(e.to_string()))?;
    write_private(&key_path, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, ck.cert.pem())
        .map_err(|e| TurnError::io(format!("writing {}", cert_path.display()), e))?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TurnError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| TurnError::io(format!("writing {}", path.display()), e))?;
    f.write_all(data)
        .map_err(|e| TurnError::io(format!("writing {}", path.display()), e))
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TurnError> {
    let data = std::fs::read(path).map_err(|e| TurnError::io(format!("reading {}", path.display()), e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TurnError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TurnError::Tls(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TurnError> {
    let data = std::fs::read(path).map_err(|e| TurnError::io(format!("reading {}", path.display()), e))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| TurnError::Tls(format!("{}: {e}", path.display())))?
        .ok_or_else(|| TurnError::Tls(format!("{}: no private key found", path.display())))
}

/// A rustls server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TurnError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TurnError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TurnError::Tls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_is_written_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("duet-turn-tls-{}-{}", std::process::id(), line!()));
        let _ = std::fs::remove_dir_all(&dir);
        let (c, k) = generate_self_signed(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let first = std::fs::read(&c).unwrap();
        let (c2, _) = generate_self_signed(&dir, &[]).unwrap();
        assert_eq!(std::fs::read(&c2).unwrap(), first, "existing pair is kept");
        server_config(&c, &k).unwrap();
        assert!(server_config(&k, &k).is_err(), "a key is not a certificate");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
