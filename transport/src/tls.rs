//! Certificates and TLS: the cluster CA ([`Ca`]), node and client
//! identities ([`Identity`]), the rustls configurations built from them, and
//! the development bootstrap ([`dev_bootstrap`]).
//!
//! Trust model: a cluster has one CA (ECDSA P-256, self-signed). It signs
//! node certificates (EKU server + client auth, DNS names
//! `node-<id>.<cluster>.shoal.internal` and `<cluster>.shoal.internal`) and
//! client certificates (EKU client auth only, DNS name
//! `client-<name>.<cluster>.shoal.internal`). The cluster name is stored in
//! the CA's subject as its organizational unit. Every connection is TLS 1.3
//! with a certificate required on both sides, verified against that one CA
//! and nothing else (no system roots).
//!
//! Invariant: the only trust anchor in any configuration built here is the
//! cluster CA certificate of the [`Identity`].
//! This module does not open sockets and does not log refusals (the
//! endpoint does, where it knows the remote address).

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::id::{self, NodeId, Peer};

/// Organization in every Shoal CA subject.
const CA_ORGANIZATION: &str = "shoal";

/// Validity window of a certificate.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use shoal_transport::Validity;
/// let year = Validity::days(365);
/// let past = Validity::between(
///     SystemTime::now() - Duration::from_secs(7200),
///     SystemTime::now() - Duration::from_secs(3600),
/// );
/// # let _ = (year, past);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    /// Clock skew tolerated between nodes: certificates start this long
    /// before they are issued.
    const BACKDATE: Duration = Duration::from_secs(3600);

    /// From an hour ago (clock skew) until `days` days from now.
    pub fn days(days: u32) -> Self {
        Self::for_duration(Duration::from_secs(u64::from(days) * 86_400))
    }

    /// From an hour ago (clock skew) until `duration` from now.
    pub fn for_duration(duration: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now.checked_sub(Self::BACKDATE).unwrap_or(now),
            not_after: now + duration,
        }
    }

    /// An explicit window; issuing fails unless `not_before < not_after`.
    pub fn between(not_before: SystemTime, not_after: SystemTime) -> Self {
        Self {
            not_before,
            not_after,
        }
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<()> {
        if self.not_before >= self.not_after {
            return Err(Error::Certificate(
                "validity must start before it ends".into(),
            ));
        }
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
        Ok(())
    }
}

/// The cluster certificate authority: issues node and client identities.
///
/// ```
/// use shoal_transport::{Ca, NodeId, Peer, Validity};
/// let ca = Ca::generate("demo")?;
/// let node = ca.issue_node(NodeId::new(1), Validity::days(30))?;
/// assert_eq!(node.peer(), &Peer::Node(NodeId::new(1)));
/// let cli = ca.issue_client("ops", Validity::days(1))?;
/// assert_eq!(cli.peer(), &Peer::Client("ops".into()));
/// // The CA survives a PEM round trip.
/// let again = Ca::from_pem(&ca.cert_pem(), &ca.key_pem())?;
/// assert_eq!(again.cluster(), "demo");
/// # Ok::<(), shoal_transport::Error>(())
/// ```
pub struct Ca {
    cluster: String,
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Creates a new CA for `cluster`, valid for ten years.
    ///
    /// `cluster` must be a DNS label: 1 to 63 bytes of `a-z`, `0-9`, `-`.
    pub fn generate(cluster: &str) -> Result<Ca> {
        Self::generate_with_validity(cluster, Validity::days(3650))
    }

    /// Creates a new CA for `cluster` with the given validity.
    pub fn generate_with_validity(cluster: &str, validity: Validity) -> Result<Ca> {
        id::validate_cluster_name(cluster).map_err(Error::Certificate)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, CA_ORGANIZATION);
        name.push(DnType::OrganizationalUnitName, cluster);
        name.push(DnType::CommonName, format!("shoal cluster CA {cluster}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity.apply(&mut params)?;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(Ca {
            cluster: cluster.to_owned(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("CA certificate PEM: {e}")))?;
        let cluster = cluster_of_ca(&cert)?;
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error)?;
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(rcgen_error)?;
        Ok(Ca {
            cluster,
            cert,
            issuer,
        })
    }

    /// Loads a CA from PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca> {
        Self::from_pem(&read(cert_path)?, &read(key_path)?)
    }

    /// Writes the certificate and key as PEM files; the key file gets mode
    /// 0600 on Unix. Refuses to overwrite existing files.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        write_new(cert_path, &self.cert_pem(), false)?;
        write_new(key_path, &self.key_pem(), true)
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The CA certificate, PEM-encoded (the trust anchor every member needs).
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }

    /// The CA private key, PEM-encoded (PKCS#8). Secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues the identity of node `node`.
    pub fn issue_node(&self, node: NodeId, validity: Validity) -> Result<Identity> {
        self.issue(
            Peer::Node(node),
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            validity,
        )
    }

    /// Issues a client identity (for example for the `shoal` CLI). A client
    /// can dial nodes but cannot serve: its certificate lacks server auth.
    pub fn issue_client(&self, name: &str, validity: Validity) -> Result<Identity> {
        id::validate_client_name(name).map_err(Error::Certificate)?;
        self.issue(
            Peer::Client(name.to_owned()),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )
    }

    fn issue(
        &self,
        peer: Peer,
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> Result<Identity> {
        let identity_name = peer.dns_name(&self.cluster);
        let mut names = vec![identity_name.clone()];
        if matches!(peer, Peer::Node(_)) {
            names.push(id::cluster_dns_name(&self.cluster));
        }
        let mut params = CertificateParams::new(names).map_err(rcgen_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, CA_ORGANIZATION);
        dn.push(DnType::OrganizationalUnitName, self.cluster.as_str());
        dn.push(DnType::CommonName, identity_name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        validity.apply(&mut params)?;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(Identity {
            cluster: self.cluster.clone(),
            peer,
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            ca: self.cert.clone(),
        })
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A node's or client's credentials: its certificate and key, and the
/// cluster CA certificate it trusts.
///
/// ```
/// use shoal_transport::{Ca, Identity, NodeId, Validity};
/// let ca = Ca::generate("demo")?;
/// let node = ca.issue_node(NodeId::new(3), Validity::days(1))?;
/// let loaded = Identity::from_pem(&ca.cert_pem(), &node.cert_pem(), &node.key_pem())?;
/// assert_eq!(loaded.peer(), node.peer());
/// # Ok::<(), shoal_transport::Error>(())
/// ```
pub struct Identity {
    cluster: String,
    peer: Peer,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl Identity {
    /// Builds an identity from PEM text: the CA certificate, this member's
    /// certificate chain (leaf first) and its private key.
    ///
    /// Checks that the leaf names an identity of the CA's cluster and was
    /// issued by that CA (by name; the signature is verified by peers).
    pub fn from_pem(ca_cert_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Identity> {
        let ca = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("CA certificate PEM: {e}")))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Certificate(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("private key PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Certificate("no certificate in PEM".into()))?;
        let cluster = cluster_of_ca(&ca)?;
        let peer = peer_of_certificate(leaf, &cluster).map_err(Error::Certificate)?;
        check_issued_by(leaf, &ca)?;
        Ok(Identity {
            cluster,
            peer,
            chain,
            key,
            ca,
        })
    }

    /// Loads an identity from PEM files.
    pub fn load(ca_cert_path: &Path, cert_path: &Path, key_path: &Path) -> Result<Identity> {
        Self::from_pem(&read(ca_cert_path)?, &read(cert_path)?, &read(key_path)?)
    }

    /// Writes the certificate chain and key as PEM files (the CA
    /// certificate is saved by [`Ca::save`]); the key file gets mode 0600 on
    /// Unix. Refuses to overwrite existing files.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        write_new(cert_path, &self.cert_pem(), false)?;
        write_new(key_path, &self.key_pem(), true)
    }

    /// Who this identity is.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The cluster this identity belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The certificate chain, PEM-encoded.
    pub fn cert_pem(&self) -> String {
        self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
    }

    /// The private key, PEM-encoded. Secret.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem(label, self.key.secret_der())
    }

    /// The trusted CA certificate, PEM-encoded.
    pub fn ca_cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.ca)
    }

    /// rustls server configuration: TLS 1.3 only, ring provider, a client
    /// certificate signed by the cluster CA required, `alpn` required.
    pub fn server_tls_config(&self, alpn: &[u8]) -> Result<rustls::ServerConfig> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| Error::Certificate(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_error)?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }

    /// rustls client configuration: TLS 1.3 only, ring provider, the
    /// cluster CA as the only root, this identity as client certificate.
    pub fn client_tls_config(&self, alpn: &[u8]) -> Result<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_error)?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(tls_error)?;
        Ok(Arc::new(roots))
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cluster: self.cluster.clone(),
            peer: self.peer.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cluster", &self.cluster)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Development mode: makes sure `data_dir/tls/` holds a CA (`ca.pem`,
/// `ca.key`) and this node's certificate (`node.pem`, `node.key`), creating
/// whatever is missing, and returns the node identity.
///
/// Logs a loud warning every time: the CA key lives next to the data, which
/// is not acceptable in production (use `shoal ca init` and
/// `shoal cert issue` there). For several nodes to talk they must share
/// one CA: copy `ca.pem` and `ca.key` into the other nodes' `tls/` folders
/// before their first start.
///
/// Once `node.pem` and `node.key` exist only `ca.pem` is needed (the CA key
/// can then be removed). Fails if existing files belong to another node id
/// or cluster.
pub fn dev_bootstrap(data_dir: &Path, cluster: &str, node: NodeId) -> Result<Identity> {
    let dir = data_dir.join("tls");
    warn!(
        dir = %dir.display(),
        "DEVELOPMENT TLS MODE: certificates and the cluster CA key are kept in the data \
         directory. NOT FOR PRODUCTION: create a CA with `shoal ca init` and issue node \
         certificates with `shoal cert issue` instead"
    );
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let (ca_cert, ca_key) = (path("ca.pem"), path("ca.key"));
    let (node_cert, node_key) = (path("node.pem"), path("node.key"));
    let identity = if node_cert.exists() || node_key.exists() {
        // Issued before: the CA key is not needed any more.
        Identity::load(&ca_cert, &node_cert, &node_key)?
    } else {
        let ca = if ca_cert.exists() || ca_key.exists() {
            Ca::load(&ca_cert, &ca_key)?
        } else {
            let ca = Ca::generate(cluster)?;
            ca.save(&ca_cert, &ca_key)?;
            warn!(path = %ca_cert.display(), cluster, "DEVELOPMENT TLS MODE: created a new cluster CA");
            ca
        };
        if ca.cluster() != cluster {
            return Err(Error::Config(format!(
                "{} is the CA of cluster {:?}, not {cluster:?}",
                ca_cert.display(),
                ca.cluster()
            )));
        }
        let identity = ca.issue_node(node, Validity::days(365))?;
        identity.save(&node_cert, &node_key)?;
        info!(path = %node_cert.display(), %node, "development TLS mode: issued node certificate");
        identity
    };
    if identity.cluster() != cluster || identity.peer() != &Peer::Node(node) {
        return Err(Error::Config(format!(
            "{} belongs to {} of cluster {:?}, not {node} of {cluster:?}",
            node_cert.display(),
            identity.peer(),
            identity.cluster()
        )));
    }
    Ok(identity)
}

/// The crypto provider: ring, with its default TLS 1.3 suites.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the identity from a verified peer certificate.
pub(crate) fn peer_of_certificate(
    cert: &CertificateDer<'_>,
    cluster: &str,
) -> Result<Peer, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unparseable certificate: {e}"))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
        .ok_or_else(|| "certificate has no subject alternative names".to_owned())?;
    let names = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        });
    Peer::from_dns_names(names, cluster)
}

/// The cluster name recorded in a CA certificate.
fn cluster_of_ca(cert: &CertificateDer<'_>) -> Result<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| Error::Certificate(format!("unparseable CA certificate: {e}")))?;
    let subject = x509.subject();
    let is_shoal = subject
        .iter_organization()
        .any(|o| o.as_str().ok() == Some(CA_ORGANIZATION));
    let cluster = subject
        .iter_organizational_unit()
        .next()
        .and_then(|ou| ou.as_str().ok())
        .filter(|_| is_shoal)
        .ok_or_else(|| Error::Certificate("not a Shoal cluster CA certificate".into()))?;
    id::validate_cluster_name(cluster).map_err(Error::Certificate)?;
    Ok(cluster.to_owned())
}

/// Checks that `leaf` names `ca` as its issuer.
fn check_issued_by(leaf: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> Result<()> {
    fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>> {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|e| Error::Certificate(format!("unparseable certificate: {e}")))
    }
    let (leaf, ca) = (parse(leaf.as_ref())?, parse(ca.as_ref())?);
    if leaf.issuer().as_raw() != ca.subject().as_raw() {
        return Err(Error::Certificate(
            "certificate was not issued by this CA".into(),
        ));
    }
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    ::pem::encode(&::pem::Pem::new(label, der))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn write_new(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let context = || format!("writing {}", path.display());
    let mut file = options.open(path).map_err(|e| Error::io(context(), e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(context(), e))
}

fn rcgen_error(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

fn tls_error(e: rustls::Error) -> Error {
    Error::Certificate(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_identities_round_trip_through_pem() {
        let ca = Ca::generate("unit").unwrap();
        let again = Ca::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.cluster(), "unit");
        // A node issued by the reloaded CA is accepted as issued by the original.
        let node = again.issue_node(NodeId::new(9), Validity::days(1)).unwrap();
        let loaded = Identity::from_pem(&ca.cert_pem(), &node.cert_pem(), &node.key_pem()).unwrap();
        assert_eq!(loaded.peer(), &Peer::Node(NodeId::new(9)));
        assert_eq!(loaded.cluster(), "unit");
        loaded.server_tls_config(b"x").unwrap();
        loaded.client_tls_config(b"x").unwrap();
    }

    #[test]
    fn identity_from_another_ca_is_refused_on_load() {
        let ca = Ca::generate("unit").unwrap();
        let other = Ca::generate("other").unwrap();
        let node = other.issue_node(NodeId::new(1), Validity::days(1)).unwrap();
        assert!(Identity::from_pem(&ca.cert_pem(), &node.cert_pem(), &node.key_pem()).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Ca::generate("Not A Label").is_err());
        let ca = Ca::generate("unit").unwrap();
        assert!(ca.issue_client("bad name", Validity::days(1)).is_err());
        let now = SystemTime::now();
        assert!(
            ca.issue_node(NodeId::new(1), Validity::between(now, now))
                .is_err()
        );
        assert!(Ca::from_pem("garbage", "garbage").is_err());
        assert!(Identity::from_pem(&ca.cert_pem(), "garbage", "garbage").is_err());
    }

    #[test]
    fn dev_bootstrap_creates_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev_bootstrap(dir.path(), "dev", NodeId::new(1)).unwrap();
        assert_eq!(first.peer(), &Peer::Node(NodeId::new(1)));
        for file in ["ca.pem", "ca.key", "node.pem", "node.key"] {
            assert!(dir.path().join("tls").join(file).exists(), "{file}");
        }
        let second = dev_bootstrap(dir.path(), "dev", NodeId::new(1)).unwrap();
        assert_eq!(second.cert_pem(), first.cert_pem());
        assert!(dev_bootstrap(dir.path(), "dev", NodeId::new(2)).is_err());
        assert!(dev_bootstrap(dir.path(), "other", NodeId::new(1)).is_err());
        // Once issued, the node no longer needs the CA key.
        fs::remove_file(dir.path().join("tls/ca.key")).unwrap();
        dev_bootstrap(dir.path(), "dev", NodeId::new(1)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("tls/node.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
