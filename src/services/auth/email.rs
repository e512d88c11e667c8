//! Email validation (auth-service): `requestToken` mails a link to kith's own page; opening
//! it proves the address is the user's. Registration, adding an address and resetting a
//! password then name the session (`sid` + `client_secret`) to use that proof, once.
//! Tokens are stored hashed, work once, and expire; sessions expire a day after they start.

use std::net::IpAddr;

use kith_storage::catalog;
use serde::{Deserialize, Serialize};

use super::AuthService;
use super::mailer::Mail;
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::{hash_secret, now_ms, random_string};

/// How long a session may be used after it starts (the mailed token expires sooner).
const SESSION_TTL_MS: u64 = 24 * 3600 * 1000;

/// The path of the page a mailed link opens.
pub const VALIDATE_PATH: &str = "/_kith/client/email/validate";

/// What a validation session is for; a proof made for one is never accepted for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailPurpose {
    Register,
    AddThreepid,
    ResetPassword,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailValidation {
    pub purpose: EmailPurpose,
    pub address: String,
    pub client_secret: String,
    pub token_hash: String,
    pub send_attempt: u64,
    pub next_link: Option<String>,
    pub token_expires_ts: u64,
    pub expires_ts: u64,
    pub validated_ts: Option<u64>,
}

/// A `requestToken` call.
pub struct TokenRequest<'a> {
    pub purpose: EmailPurpose,
    pub client_secret: &'a str,
    pub email: &'a str,
    pub send_attempt: u64,
    pub next_link: Option<&'a str>,
    pub client_ip: IpAddr,
}

fn auth_failed(message: &str) -> Error {
    Error::new(ErrorKind::ThreepidAuthFailed, message)
}

pub fn medium_not_supported() -> Error {
    Error::new(
        ErrorKind::ThreepidMediumNotSupported,
        "This server supports email addresses only",
    )
}

pub fn threepid_in_use() -> Error {
    Error::new(
        ErrorKind::ThreepidInUse,
        "This email address is already in use",
    )
}

/// An email address as kith keeps it (lower case, trimmed), if it looks like one.
pub fn normalize_address(email: &str) -> Option<String> {
    let address = email.trim().to_lowercase();
    let (local, domain) = address.rsplit_once('@')?;
    let domain_ok = domain.contains('.') || domain == "localhost";
    let ok = !local.is_empty()
        && domain_ok
        && address.len() <= 254
        && address.parse::<lettre::Address>().is_ok();
    ok.then_some(address)
}

impl AuthService {
    fn email_enabled(&self) -> Result<&super::mailer::Mailer> {
        self.mailer.as_deref().ok_or_else(medium_not_supported)
    }

    /// Starts (or continues) a validation session and queues its mail; answers at once.
    pub async fn request_email_token(&self, request: TokenRequest<'_>) -> Result<String> {
        let mailer = self.email_enabled()?;
        let address = normalize_address(request.email)
            .ok_or_else(|| Error::invalid_param("Invalid email address"))?;
        let config = &self.email_config;
        if !self.email_domain_allowed(&address) {
            return Err(Error::new(
                ErrorKind::ThreepidDenied,
                "Email addresses at this domain are not allowed here",
            ));
        }
        let next_link = match request.next_link {
            Some(link) => Some(self.check_next_link(link)?),
            None => None,
        };
        let ip = crate::util::address_key(request.client_ip);
        self.email_limiter
            .take_all(&[ip.as_str(), address.as_str()])
            .map_err(Error::limit_exceeded)?;
        let owner = self.email_owner(&address)?;
        match request.purpose {
            EmailPurpose::ResetPassword if owner.is_none() => {
                return Err(Error::new(
                    ErrorKind::ThreepidNotFound,
                    "No account has this email address",
                ));
            }
            EmailPurpose::Register | EmailPurpose::AddThreepid if owner.is_some() => {
                return Err(threepid_in_use());
            }
            _ => {}
        }

        let _guard = self.email_lock.lock().await;
        let now = now_ms();
        let lookup = (request.client_secret, address.as_str());
        let existing = self
            .storage
            .get::<_, String>(&catalog::CLIENTSECRET_ADDRESS_SID, &lookup)?
            .and_then(|sid| Some((self.email_session(&sid).ok()??, sid)))
            .filter(|(s, _)| s.purpose == request.purpose);
        if let Some((session, sid)) = &existing
            && request.send_attempt <= session.send_attempt
        {
            // The client retried: same session, no new mail.
            return Ok(sid.clone());
        }
        let token = random_string(32);
        let lifetime_ms = config.token_lifetime.saturating_mul(1000);
        let (sid, session) = match existing {
            Some((mut session, sid)) => {
                session.token_hash = hash_secret(&token);
                session.send_attempt = request.send_attempt;
                session.next_link = next_link;
                session.token_expires_ts = now + lifetime_ms;
                session.validated_ts = None;
                (sid, session)
            }
            None => (
                random_string(24),
                EmailValidation {
                    purpose: request.purpose,
                    address: address.clone(),
                    client_secret: request.client_secret.to_owned(),
                    token_hash: hash_secret(&token),
                    send_attempt: request.send_attempt,
                    next_link,
                    token_expires_ts: now + lifetime_ms,
                    expires_ts: now + SESSION_TTL_MS.max(lifetime_ms),
                    validated_ts: None,
                },
            ),
        };
        let mut batch = self.storage.batch();
        batch.put(&catalog::SID_EMAILVALIDATION, &sid.as_str(), &session)?;
        batch.put(&catalog::CLIENTSECRET_ADDRESS_SID, &lookup, &sid)?;
        let mail = self.validation_mail(&sid, &session, &token);
        mailer.queue_into(&mut batch, &mail)?;
        self.storage.commit(batch).await?;
        mailer.wake();
        Ok(sid)
    }

    /// Whether addresses at `address`'s domain may be used here (`email.allowed_domains`).
    pub fn email_domain_allowed(&self, address: &str) -> bool {
        let allowed = &self.email_config.allowed_domains;
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        allowed.is_empty() || allowed.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// A `next_link` must be a web URL, on an allowed host when the operator lists them.
    /// Returns it as parsed (control characters encoded), fit for a `Location` header.
    fn check_next_link(&self, link: &str) -> Result<String> {
        let url = url::Url::parse(link)
            .map_err(|_| Error::invalid_param("next_link is not a valid URL"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(Error::invalid_param("next_link must be an http(s) URL"));
        }
        let allowed = &self.email_config.next_link_domains;
        let host = url.host_str().unwrap_or_default();
        if !allowed.is_empty() && !allowed.iter().any(|d| d.eq_ignore_ascii_case(host)) {
            return Err(Error::invalid_param(
                "next_link leads to a host not allowed",
            ));
        }
        Ok(url.into())
    }

    fn validation_mail(&self, sid: &str, session: &EmailValidation, token: &str) -> Mail {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sid", sid)
            .append_pair("client_secret", &session.client_secret)
            .append_pair("token", token)
            .finish();
        let link = format!("{}{VALIDATE_PATH}?{query}", self.public_baseurl);
        let server = self.server_name.as_str();
        let (subject, what) = match session.purpose {
            EmailPurpose::Register => (
                "Confirm your email address",
                format!("register an account on {server} with this email address"),
            ),
            EmailPurpose::AddThreepid => (
                "Confirm your email address",
                format!("add this email address to an account on {server}"),
            ),
            EmailPurpose::ResetPassword => (
                "Reset your password",
                format!("reset the password of your account on {server}"),
            ),
        };
        let minutes = self.email_config.token_lifetime.div_ceil(60);
        Mail {
            to: session.address.clone(),
            subject: format!("[{server}] {subject}"),
            text: format!(
                "Someone, hopefully you, asked to {what}.\n\n\
                 To confirm, open this link within {minutes} minutes:\n\n{link}\n\n\
                 If it was not you, ignore this mail: nothing changes.\n"
            ),
            queued_ts: now_ms(),
        }
    }

    fn email_session(&self, sid: &str) -> Result<Option<EmailValidation>> {
        let session: Option<EmailValidation> =
            self.storage.get(&catalog::SID_EMAILVALIDATION, &sid)?;
        Ok(session.filter(|s| s.expires_ts > now_ms()))
    }

    /// The mailed link was opened: marks the session validated and returns where to send
    /// the browser next, if the client said.
    pub async fn validate_email_link(
        &self,
        sid: &str,
        client_secret: &str,
        token: &str,
    ) -> Result<Option<String>> {
        let _guard = self.email_lock.lock().await;
        let mut session = self
            .email_session(sid)?
            .filter(|s| s.client_secret == client_secret && s.token_hash == hash_secret(token))
            .ok_or_else(|| auth_failed("This link is not valid"))?;
        if session.validated_ts.is_some() {
            // Mail scanners open links too: say the address is verified all the same.
            return Err(auth_failed(
                "This link has already been used: the address is verified",
            ));
        }
        if session.token_expires_ts <= now_ms() {
            return Err(auth_failed("This link has expired: ask for a new mail"));
        }
        session.validated_ts = Some(now_ms());
        self.storage
            .put(&catalog::SID_EMAILVALIDATION, &sid, &session)
            .await?;
        Ok(session.next_link)
    }

    /// The address a validated session proves, for `purpose`.
    pub fn validated_email(
        &self,
        sid: &str,
        client_secret: &str,
        purpose: EmailPurpose,
    ) -> Result<EmailProof> {
        let session = self
            .email_session(sid)?
            .filter(|s| s.client_secret == client_secret && s.purpose == purpose)
            .ok_or_else(|| auth_failed("Unknown validation session"))?;
        let validated_ts = session
            .validated_ts
            .ok_or_else(|| auth_failed("The email address has not been verified yet"))?;
        Ok(EmailProof {
            sid: sid.to_owned(),
            address: session.address,
            client_secret: session.client_secret,
            validated_ts,
        })
    }

    /// Ends a session whose proof is being used, in `batch`; fails if it was used already.
    /// The caller holds [`AuthService::registering`], under which every use is committed,
    /// so one proof serves one action.
    pub fn consume_email_proof_into(
        &self,
        batch: &mut kith_storage::Batch,
        proof: &EmailProof,
    ) -> Result<()> {
        let current = self.email_session(&proof.sid)?;
        if !current.is_some_and(|s| s.validated_ts.is_some() && s.address == proof.address) {
            return Err(auth_failed("This email validation was used already"));
        }
        batch.delete(&catalog::SID_EMAILVALIDATION, &proof.sid.as_str())?;
        let lookup = (proof.client_secret.as_str(), proof.address.as_str());
        batch.delete(&catalog::CLIENTSECRET_ADDRESS_SID, &lookup)?;
        Ok(())
    }

    /// Deletes expired sessions; run now and then.
    pub async fn prune_email_sessions(&self) -> Result<()> {
        let now = now_ms();
        let sessions: Vec<(String, EmailValidation)> =
            self.storage
                .scan_from(&catalog::SID_EMAILVALIDATION, &String::new(), usize::MAX)?;
        let mut batch = self.storage.batch();
        for (sid, session) in sessions.into_iter().filter(|(_, s)| s.expires_ts <= now) {
            batch.delete(&catalog::SID_EMAILVALIDATION, &sid.as_str())?;
            let lookup = (session.client_secret.as_str(), session.address.as_str());
            let current: Option<String> = self
                .storage
                .get(&catalog::CLIENTSECRET_ADDRESS_SID, &lookup)?;
            if current.as_deref() == Some(sid.as_str()) {
                batch.delete(&catalog::CLIENTSECRET_ADDRESS_SID, &lookup)?;
            }
        }
        if !batch.is_empty() {
            self.storage.commit(batch).await?;
        }
        Ok(())
    }
}

/// What a validated session proves.
#[derive(Debug, Clone)]
pub struct EmailProof {
    pub sid: String,
    pub address: String,
    client_secret: String,
    pub validated_ts: u64,
}
