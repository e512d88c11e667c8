//! Registration: the user-interactive auth flows offered (`m.login.dummy` or
//! `m.login.email.identity`, the latter only with `require_email`, and
//! `m.login.registration_token` first when the server is in token mode), and the account
//! a registration creates.

use kith_storage::Batch;
use ruma::OwnedUserId;

use super::uia::UiaSession;
use super::{AuthService, UiaFlows, email};
use crate::config::RegistrationMode;
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::random_string;

const OPEN_FLOWS: UiaFlows = &[&["m.login.dummy"]];
const OPEN_EMAIL_FLOWS: UiaFlows = &[&["m.login.dummy"], &["m.login.email.identity"]];
const OPEN_EMAIL_REQUIRED_FLOWS: UiaFlows = &[&["m.login.email.identity"]];
/// As Synapse: the token stage, then dummy (matrix-nio's token registration expects both).
const TOKEN_FLOWS: UiaFlows = &[&["m.login.registration_token", "m.login.dummy"]];
const TOKEN_EMAIL_FLOWS: UiaFlows = &[
    &["m.login.registration_token", "m.login.dummy"],
    &["m.login.registration_token", "m.login.email.identity"],
];
const TOKEN_EMAIL_REQUIRED_FLOWS: UiaFlows =
    &[&["m.login.registration_token", "m.login.email.identity"]];

impl AuthService {
    /// The flows offered: email as an option when mail is set up, the only way if required.
    pub fn registration_flows(&self) -> Result<UiaFlows> {
        let email = self.mailer.is_some();
        let registration = &self.registration;
        Ok(
            match (registration.mode, email, registration.require_email) {
                (RegistrationMode::Closed, ..) => {
                    return Err(Error::forbidden("Registration is disabled"));
                }
                (RegistrationMode::Open, false, _) => OPEN_FLOWS,
                (RegistrationMode::Open, true, false) => OPEN_EMAIL_FLOWS,
                (RegistrationMode::Open, true, true) => OPEN_EMAIL_REQUIRED_FLOWS,
                (RegistrationMode::Token, false, _) => TOKEN_FLOWS,
                (RegistrationMode::Token, true, false) => TOKEN_EMAIL_FLOWS,
                (RegistrationMode::Token, true, true) => TOKEN_EMAIL_REQUIRED_FLOWS,
            },
        )
    }

    /// Whether a registration token may still be used (403 outside token mode).
    pub fn registration_token_valid(&self, token: &str) -> Result<bool> {
        if self.registration.mode != RegistrationMode::Token {
            return Err(Error::forbidden("Registration tokens are not in use"));
        }
        self.token_valid(token)
    }

    /// Creates an account in `batch` for a registration whose user-interactive auth
    /// passed (`uia`), under [`AuthService::registering`]: the name (the asked one, else a
    /// random free one) and the token's last use and the email's owner re-checked, as
    /// another registration may have taken them since.
    pub fn register_into(
        &self,
        batch: &mut Batch,
        username: Option<&str>,
        hash: String,
        uia: &UiaSession,
    ) -> Result<OwnedUserId> {
        let user_id = match username {
            Some(username) => self.check_available(username)?,
            None => loop {
                if let Ok(user_id) = self.check_available(&random_string(12).to_lowercase()) {
                    break user_id;
                }
            },
        };
        if let Some(token) = &uia.registration_token {
            if !self.token_valid(token)? {
                return Err(Error::new(
                    ErrorKind::Unauthorized,
                    "Registration token used up",
                ));
            }
            self.consume_token_into(batch, token)?;
        }
        if let Some(proof) = &uia.email {
            if self.email_owner(&proof.address)?.is_some() {
                return Err(email::threepid_in_use());
            }
            self.bind_email_into(batch, &user_id, &proof.address, proof.validated_ts)?;
            self.consume_email_proof_into(batch, proof)?;
        }
        self.create_account_into(batch, &user_id, Some(hash), false)?;
        Ok(user_id)
    }
}
