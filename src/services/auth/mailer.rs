//! Outgoing mail: queued in `position_mail` in the same write as what it tells about, sent
//! by one task, retried with backoff. A slow or absent SMTP server never holds up a request
//! nor loses a mail; a mail whose link has expired is no longer worth sending and is dropped.

use std::sync::Arc;
use std::time::Duration;

use kith_storage::{Batch, Storage, catalog};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{Email, SmtpSecurity};
use crate::services::error::Result;
use crate::util::now_ms;

/// Longest wait between attempts while the SMTP server fails.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub queued_ts: u64,
}

pub struct Mailer {
    storage: Storage,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Mail older than this is dropped unsent: its link no longer works.
    max_age_ms: u64,
    wake: Notify,
}

impl Mailer {
    pub fn new(storage: Storage, config: &Email) -> Result<Mailer, String> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("email.from {:?} is not a mail address: {e}", config.from))?;
        let host = config.smtp_host.as_str();
        let relay_error = |e| format!("email.smtp_host {host:?}: {e}");
        let builder = match config.smtp_security {
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(relay_error)?
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(relay_error)?
            }
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder
            .port(config.smtp_port)
            .timeout(Some(Duration::from_secs(30)));
        if !config.smtp_username.is_empty() {
            builder = builder.credentials(Credentials::new(
                config.smtp_username.clone(),
                config.smtp_password.clone(),
            ));
        }
        Ok(Mailer {
            storage,
            transport: builder.build(),
            from,
            max_age_ms: config.token_lifetime.saturating_mul(1000),
            wake: Notify::new(),
        })
    }

    /// Queues `mail` in `batch`; call [`Mailer::wake`] once the batch is committed.
    pub fn queue_into(&self, batch: &mut Batch, mail: &Mail) -> Result<()> {
        let position = batch.new_position()?;
        batch.put(&catalog::POSITION_MAIL, &position, mail)?;
        Ok(())
    }

    pub fn wake(&self) {
        // A stored permit if the sender is busy: the next look at the queue finds the mail.
        self.wake.notify_one();
    }

    /// Starts the sender, which first sends what a previous run left.
    pub fn start(self: &Arc<Self>) {
        let mailer = Arc::clone(self);
        tokio::spawn(async move { mailer.run().await });
    }

    async fn run(&self) {
        let mut backoff = Duration::ZERO;
        loop {
            let queued: Vec<(u64, Mail)> =
                match self.storage.scan_from(&catalog::POSITION_MAIL, &0u64, 20) {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::error!("cannot read the mail queue: {e}");
                        Vec::new()
                    }
                };
            if queued.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let mut failed = false;
            for (position, mail) in queued {
                if now_ms().saturating_sub(mail.queued_ts) > self.max_age_ms {
                    tracing::warn!(to = %mail.to, "mail dropped unsent: its link has expired");
                } else if let Err(e) = self.send(&mail).await {
                    if !e.is_permanent() {
                        tracing::warn!(to = %mail.to, "SMTP server failed, will retry: {e}");
                        failed = true;
                        break;
                    }
                    tracing::warn!(to = %mail.to, "mail refused by the SMTP server, dropped: {e}");
                }
                if let Err(e) = self.remove(position).await {
                    tracing::error!("cannot update the mail queue: {e}");
                    failed = true;
                    break;
                }
            }
            if failed {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tokio::time::sleep(backoff).await;
            } else {
                backoff = Duration::ZERO;
            }
        }
    }

    async fn remove(&self, position: u64) -> kith_storage::Result<()> {
        let mut batch = self.storage.batch();
        batch.delete(&catalog::POSITION_MAIL, &position)?;
        self.storage.commit(batch).await
    }

    async fn send(&self, mail: &Mail) -> Result<(), lettre::transport::smtp::Error> {
        let message = match self.message(mail) {
            Ok(message) => message,
            Err(e) => {
                // Addresses are checked before queueing, so this is not expected; never retry it.
                tracing::error!(to = %mail.to, "cannot build mail: {e}");
                return Ok(());
            }
        };
        self.transport.send(message).await.map(|_| ())
    }

    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let to: Mailbox = mail.to.parse().map_err(|e| format!("{e}"))?;
        // 7bit keeps a long link on one line, as written, for any reader (lettre would pick
        // quoted-printable past 76 characters, though 998 are allowed); other text gets the
        // encoding lettre picks.
        let plain = mail.text.is_ascii() && mail.text.lines().all(|l| l.len() < 998);
        let body = match plain {
            true => Body::dangerous_pre_encoded(
                mail.text.replace('\n', "\r\n").into_bytes(),
                ContentTransferEncoding::SevenBit,
            ),
            false => Body::new(mail.text.clone()),
        };
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())
    }
}
