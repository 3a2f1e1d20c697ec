//! Certificates made on the spot with rcgen: a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate, and an unrelated CA — all as PEM files in a temp folder.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::TempDir;

/// Test certificates.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by
    /// it, and an unrelated CA.
    pub fn new() -> Result<Pki> {
        let dir = TempDir::new();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text);
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mcp-bridge test CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write("ca.pem", ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut sp = CertificateParams::new(vec!["localhost".to_owned()])?;
        sp.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        let server_cert = sp.signed_by(&server_key, &issuer)?;
        write("server.pem", server_cert.pem())?;
        write("server.key", server_key.serialize_pem())?;

        let client_key = KeyPair::generate()?;
        let mut cp = CertificateParams::new(Vec::<String>::new())?;
        cp.distinguished_name.push(DnType::CommonName, "alice");
        let client_cert = cp.signed_by(&client_key, &issuer)?;
        write("client.pem", client_cert.pem())?;
        write("client.key", client_key.serialize_pem())?;

        // Two more client certificates for the certificate-identity tests: bob's names him by
        // an email SAN (its CN is a device name), eve's is signed by the CA but mapped to no one.
        let bob_key = KeyPair::generate()?;
        let mut bp = CertificateParams::new(Vec::<String>::new())?;
        bp.distinguished_name.push(DnType::CommonName, "bob-laptop");
        bp.subject_alt_names
            .push(SanType::Rfc822Name("bob@example.com".try_into()?));
        write("bob.pem", bp.signed_by(&bob_key, &issuer)?.pem())?;
        write("bob.key", bob_key.serialize_pem())?;
        let eve_key = KeyPair::generate()?;
        let mut ep = CertificateParams::new(Vec::<String>::new())?;
        ep.distinguished_name.push(DnType::CommonName, "eve");
        write("eve.pem", ep.signed_by(&eve_key, &issuer)?.pem())?;
        write("eve.key", eve_key.serialize_pem())?;

        let other_key = KeyPair::generate()?;
        let mut op = CertificateParams::new(Vec::<String>::new())?;
        op.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other = op.self_signed(&other_key)?;
        write("other-ca.pem", other.pem())?;
        Ok(Pki { dir })
    }

    /// The path of `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key` (CN alice),
    /// `bob.pem`, `bob.key` (SAN bob@example.com), `eve.pem`, `eve.key` (CN eve) or
    /// `other-ca.pem`.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}
