//! One ACME order for one name, with `instant-acme` (RFC 8555: JWS,
//! nonces, polling are the crate's): the account (restored from the store,
//! or created and stored), the order, its challenge answered through
//! [`Challenges`], the CSR (a fresh key per certificate), the chain. Each
//! step logs one line under `turnout::acme`.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::challenges::{Challenges, Posted};
use super::store::Store;
use crate::config::acme::{AcmeConfig, Challenge};

/// How long the server may take to validate, and then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// Why an order failed, in the words of the step that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct OrderError {
    /// `account`, `new-order`, `challenge`, `validation`, `finalize`,
    /// `certificate`, `store`, `timeout`.
    pub step: &'static str,
    /// The server's or the crate's words.
    pub message: String,
}

fn at(step: &'static str) -> impl FnOnce(instant_acme::Error) -> OrderError {
    move |e| OrderError {
        step,
        message: e.to_string(),
    }
}

/// What the store keeps for the account: the credentials are only good
/// at the directory they were made at.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The account: restored from `store` when it was made at this directory,
/// else created (terms of service agreed) and stored.
pub(crate) async fn account(config: &AcmeConfig, store: &dyn Store) -> Result<Account, OrderError> {
    let builder = || match &config.directory_ca {
        Some(ca) => Account::builder_with_root(ca).map_err(at("account")),
        None => Account::builder().map_err(at("account")),
    };
    let stored = store.account().map_err(|e| OrderError {
        step: "account",
        message: e.to_string(),
    })?;
    if let Some(json) = stored {
        match serde_json::from_str::<StoredAccount>(&json) {
            Ok(s) if s.directory == config.directory_url => {
                return builder()?
                    .from_credentials(s.credentials)
                    .await
                    .map_err(at("account"));
            }
            Ok(_) => tracing::info!(target: "turnout::acme", directory = %config.directory_url,
                "the stored account belongs to another directory: creating one"),
            Err(e) => {
                tracing::warn!(target: "turnout::acme", file = %store.describe(None), error = %e,
                "the stored account is unreadable: creating one")
            }
        }
    }
    let contact = config.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()?
        .create(&new, config.directory_url.clone(), None)
        .await
        .map_err(at("account"))?;
    let json = serde_json::to_string(&StoredAccount {
        directory: config.directory_url.clone(),
        credentials,
    })
    .map_err(|e| OrderError {
        step: "account",
        message: e.to_string(),
    })?;
    store.save_account(&json).map_err(|e| OrderError {
        step: "store",
        message: e.to_string(),
    })?;
    tracing::info!(target: "turnout::acme", id = account.id(), directory = %config.directory_url, "account created");
    Ok(account)
}

/// Orders a certificate for `name` (replacing `replaces`, with renewal
/// information), answering its challenge the way `kind` says. Returns the
/// private key and the chain, as PEM.
pub(crate) async fn issue(
    account: &Account,
    name: &str,
    kind: Challenge,
    replaces: Option<CertificateIdentifier<'static>>,
    challenges: &Arc<Challenges>,
) -> Result<String, OrderError> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut new = NewOrder::new(&identifiers);
    if let Some(id) = replaces {
        new = new.replaces(id);
    }
    let mut order = account.new_order(&new).await.map_err(at("new-order"))?;
    tracing::info!(target: "turnout::acme", name, order = order.url(), "order created");
    // The answers stay posted until the order is settled.
    let mut posted: Vec<Posted> = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(at("challenge"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(OrderError {
                    step: "challenge",
                    message: format!("authorization is {other:?}"),
                });
            }
        }
        let wanted = match kind {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut challenge = authz.challenge(wanted.clone()).ok_or_else(|| OrderError {
            step: "challenge",
            message: format!("the server offers no {wanted:?} challenge for {name}"),
        })?;
        let key_auth = challenge.key_authorization();
        posted.push(match kind {
            Challenge::Http01 => {
                let token = challenge.token.clone();
                let posted = challenges.post_http01(&token, key_auth.as_str());
                // Before `ready`: the validation may reach another instance.
                challenges.share_http01(&token, key_auth.as_str()).await;
                posted
            }
            Challenge::TlsAlpn01 => {
                let cert = alpn_certificate(name, key_auth.digest().as_ref())?;
                challenges.post_tls_alpn01(name, cert)
            }
        });
        challenge.set_ready().await.map_err(at("challenge"))?;
        tracing::info!(target: "turnout::acme", name, challenge = ?wanted, "challenge answered");
    }
    let status = order.poll_ready(&POLL).await.map_err(at("validation"))?;
    drop(posted);
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map_or_else(|| format!("order is {status:?}"), |p| p.to_string());
        return Err(OrderError {
            step: "validation",
            message: detail,
        });
    }
    tracing::info!(target: "turnout::acme", name, "validated");
    let key_pem = order.finalize().await.map_err(at("finalize"))?;
    let chain = order
        .poll_certificate(&POLL)
        .await
        .map_err(at("certificate"))?;
    tracing::info!(target: "turnout::acme", name, "certificate issued");
    Ok(format!("{key_pem}{chain}"))
}

/// The self-signed certificate TLS-ALPN-01 wants (RFC 8737 §3): `name`
/// only, with the critical acmeIdentifier extension holding `digest`.
fn alpn_certificate(
    name: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, OrderError> {
    let fail = |e: rcgen::Error| OrderError {
        step: "challenge",
        message: format!("making the TLS-ALPN-01 certificate: {e}"),
    };
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| OrderError {
            step: "challenge",
            message: format!("loading the TLS-ALPN-01 key: {e}"),
        })?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}
