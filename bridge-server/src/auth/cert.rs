//! Client certificates as an identity (`mode = "mtls"`): the certificate the TLS handshake
//! verified against `[tls] client_ca` is mapped, by its subject common name or one of its
//! subject alternative names (DNS, email, URI), to a configured user with grants and groups
//! (`[[auth.cert]]`), as static tokens are. Not responsible for verifying the certificate (rustls
//! did, against the client CA, before any request was read).

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{AuthError, Grant, Principal};

/// The names a verified client certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject's common name (CN), if any.
    pub subject_cn: Option<String>,
    /// Subject alternative names: DNS names, email addresses and URIs, as written.
    pub sans: Vec<String>,
}

impl CertIdentity {
    /// The names of a DER certificate; `None` when it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<CertIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject_cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        sans.push((*s).to_owned())
                    }
                    _ => {}
                }
            }
        }
        Some(CertIdentity { subject_cn, sans })
    }
}

/// One `[[auth.cert]]`: which certificates it matches, and who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    /// User name.
    pub user: String,
    /// Matches a certificate whose subject CN is exactly this.
    pub subject_cn: Option<String>,
    /// Matches a certificate with exactly this SAN (DNS name, email or URI).
    pub san: Option<String>,
    /// Tools granted.
    pub grant: Grant,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
}

impl CertEntry {
    fn matches(&self, id: &CertIdentity) -> bool {
        let cn = self
            .subject_cn
            .as_ref()
            .is_some_and(|want| id.subject_cn.as_ref() == Some(want));
        let san = self
            .san
            .as_ref()
            .is_some_and(|want| id.sans.iter().any(|s| s == want));
        cn || san
    }
}

/// The principal of a verified client certificate: the first entry that matches it.
pub(super) fn check(
    entries: &[CertEntry],
    id: Option<&CertIdentity>,
) -> Result<Principal, AuthError> {
    let id = id.ok_or(AuthError::NoCertificate)?;
    entries
        .iter()
        .find(|e| e.matches(id))
        .map(|e| Principal {
            user: e.user.clone(),
            grant: e.grant.clone(),
            groups: e.groups.clone(),
            credential: None,
        })
        .ok_or(AuthError::UnknownCertificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(cn: &str, sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn names_are_read_and_mapped() {
        let email = rcgen::SanType::Rfc822Name("bob@example.com".try_into().expect("ia5"));
        let dns = rcgen::SanType::DnsName("ci.example.com".try_into().expect("ia5"));
        let id = CertIdentity::from_der(&der("bob", vec![email, dns])).expect("parsed");
        assert_eq!(id.subject_cn.as_deref(), Some("bob"));
        assert_eq!(id.sans, ["bob@example.com", "ci.example.com"]);
        let entries = vec![
            CertEntry {
                user: "robert".into(),
                subject_cn: None,
                san: Some("bob@example.com".into()),
                grant: Grant::from_names(["time"]),
                groups: vec!["eng".into()],
            },
            CertEntry {
                user: "alice".into(),
                subject_cn: Some("alice".into()),
                san: None,
                grant: Grant::All,
                groups: vec![],
            },
        ];
        let p = check(&entries, Some(&id)).expect("bob");
        assert_eq!(
            (p.user.as_str(), p.groups.as_slice()),
            ("robert", &["eng".to_owned()][..])
        );
        assert!(p.grant.allows("time") && !p.grant.allows("git"));
        let alice = CertIdentity::from_der(&der("alice", vec![])).expect("parsed");
        assert_eq!(check(&entries, Some(&alice)).expect("alice").user, "alice");
        let eve = CertIdentity::from_der(&der("eve", vec![])).expect("parsed");
        assert_eq!(
            check(&entries, Some(&eve)),
            Err(AuthError::UnknownCertificate)
        );
        assert_eq!(check(&entries, None), Err(AuthError::NoCertificate));
        assert!(CertIdentity::from_der(b"not a certificate").is_none());
    }
}
