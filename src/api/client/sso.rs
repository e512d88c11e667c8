//! Sign-in with an OpenID Connect provider (legacy Matrix SSO, auth-service): the redirect
//! to the provider, kith's callback page, the page that confirms an unknown client before
//! handing it a login token, and the `m.login.sso` stage's fallback page for UIA.

use std::net::IpAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ruma::UserId;
use serde::Deserialize;

use super::pages::{cookie, escape, page, wants_html};
use crate::gateway::{ClientIp, Error, Result};
use crate::services::AppState;
use crate::services::account;
use crate::services::auth::sso::{SsoPurpose, SsoStart, cookie_name};

/// A `302 Found` to `location` (what clients and the tests expect from SSO redirects).
fn found(location: &str) -> Result<Response> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| Error::invalid_param("The redirect URL is not a valid header value"))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

/// The redirect to the provider, with the cookie binding the sign-in to this browser.
fn to_provider(start: SsoStart) -> Result<Response> {
    let mut response = found(&start.location)?;
    let cookie = HeaderValue::from_str(&start.set_cookie).map_err(Error::internal)?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// An error as a page for a browser, or as a Matrix error for a program.
fn failure(headers: &HeaderMap, error: Error) -> Response {
    match wants_html(headers) {
        true => page(
            error.status(),
            "Sign-in failed",
            &format!("<p>{}</p>", escape(&error.message())),
        ),
        false => error.into_response(),
    }
}

#[derive(Deserialize)]
pub struct RedirectQuery {
    #[serde(rename = "redirectUrl")]
    redirect_url: Option<String>,
}

/// A client's `redirectUrl`: a URL, and not one that runs code in the browser.
fn checked_redirect_url(query: &RedirectQuery) -> Result<String> {
    let url = query
        .redirect_url
        .as_deref()
        .ok_or_else(|| Error::missing_param("Missing redirectUrl"))?;
    let parsed =
        url::Url::parse(url).map_err(|_| Error::invalid_param("redirectUrl is not a URL"))?;
    if matches!(
        parsed.scheme(),
        "javascript" | "data" | "vbscript" | "file" | "blob"
    ) {
        return Err(Error::invalid_param("redirectUrl has a forbidden scheme"));
    }
    Ok(url.to_owned())
}

/// `GET /_matrix/client/v3/login/sso/redirect?redirectUrl=`: to the only provider, or a
/// page to pick one when there are several.
pub async fn redirect(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    Query(query): Query<RedirectQuery>,
) -> Response {
    let providers = state.auth.sso_providers();
    let result = match providers {
        [] => Err(Error::not_found("No identity provider is configured")),
        [only] => start_login(&state, &only.config.id, &query, client_ip).await,
        several => checked_redirect_url(&query).map(|url| {
            let links: String = several
                .iter()
                .map(|p| {
                    let mut link = format!("/_matrix/client/v3/login/sso/redirect/{}", p.config.id);
                    link.push_str("?redirectUrl=");
                    link.extend(url::form_urlencoded::byte_serialize(url.as_bytes()));
                    format!(
                        "<li><a href=\"{}\">{}</a></li>",
                        escape(&link),
                        escape(&p.config.name)
                    )
                })
                .collect();
            page(
                StatusCode::OK,
                "Sign in with…",
                &format!("<ul>{links}</ul>"),
            )
        }),
    };
    result.unwrap_or_else(|e| failure(&headers, e))
}

/// `GET /_matrix/client/v3/login/sso/redirect/{idpId}?redirectUrl=`
pub async fn redirect_to(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    idp: Result<Path<String>, PathRejection>,
    query: Result<Query<RedirectQuery>, QueryRejection>,
) -> Response {
    // A malformed path or query is answered like any other failure here, not as axum's text.
    let started = async {
        let Path(idp) = idp.map_err(|e| Error::invalid_param(e.body_text()))?;
        let Query(query) = query.map_err(|e| Error::invalid_param(e.body_text()))?;
        start_login(&state, &idp, &query, client_ip).await
    };
    started.await.unwrap_or_else(|e| failure(&headers, e))
}

async fn start_login(
    state: &AppState,
    idp: &str,
    query: &RedirectQuery,
    client_ip: IpAddr,
) -> Result<Response> {
    let redirect_url = checked_redirect_url(query)?;
    let start = state
        .auth
        .sso_start(idp, SsoPurpose::Login { redirect_url }, client_ip)
        .await?;
    to_provider(start)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /_kith/client/oidc/callback?code&state`: where the provider sends the browser
/// back. A login goes on to the client with a login token (after a confirmation page if
/// the client is not on `sso.allowed_redirect_urls`); a re-authentication completes the
/// UIA session's SSO stage.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let name = query.state.as_deref().map(cookie_name);
    let browser = name.as_deref().and_then(|name| cookie(&headers, name));
    let mut response = finish(&state, browser, &query)
        .await
        .unwrap_or_else(|e| failure(&headers, e));
    // The sign-in's cookie has served its purpose either way.
    if let (Some(name), Some(_)) = (&name, browser) {
        let expired = state.auth.sso_cookie(name, "", 0);
        if let Ok(value) = HeaderValue::from_str(&expired) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn finish(
    state: &AppState,
    browser: Option<&str>,
    query: &CallbackQuery,
) -> Result<Response> {
    let sign_in = query
        .state
        .as_deref()
        .ok_or_else(|| Error::missing_param("Missing state"))?;
    if let Some(error) = &query.error {
        // Used up, so it cannot be replayed with a code later.
        state.auth.sso_cancel(sign_in, browser);
        return Err(Error::forbidden(format!(
            "The identity provider did not sign you in: {error}"
        )));
    }
    let code = query
        .code
        .as_deref()
        .ok_or_else(|| Error::missing_param("Missing code"))?;
    let (purpose, identity) = state.auth.sso_finish(sign_in, browser, code).await?;
    match purpose {
        SsoPurpose::Login { redirect_url } => {
            let user_id = account::sso_user(state, &identity).await?;
            let token = state.auth.issue_login_token(&user_id).await?;
            let mut target = url::Url::parse(&redirect_url).map_err(Error::internal)?;
            target.query_pairs_mut().append_pair("loginToken", &token);
            if state.auth.sso_trusts(&redirect_url) {
                return found(target.as_str());
            }
            Ok(confirmation(&user_id, &redirect_url, target.as_str()))
        }
        SsoPurpose::Reauth { uia_session } => {
            let user_id = state
                .auth
                .linked_user(&identity.idp, &identity.subject)?
                .ok_or_else(|| Error::forbidden("This sign-in is not linked to an account"))?;
            state.auth.complete_sso_stage(&uia_session, &user_id)?;
            Ok(reauth_done())
        }
    }
}

/// Asks before handing a login token to a client the operator has not listed: a phishing
/// site could have started the sign-in to get one.
fn confirmation(user_id: &UserId, redirect_url: &str, target: &str) -> Response {
    let host = url::Url::parse(redirect_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| redirect_url.to_owned());
    page(
        StatusCode::OK,
        "Continue to your app?",
        &format!(
            "<p>You are signing in as <b>{}</b>. The app at <b>{}</b> will get access to \
             your account.</p><p>Continue only if you started this sign-in from that app.</p>\
             <p><a href=\"{}\">Continue</a></p>",
            escape(user_id.as_str()),
            escape(&host),
            escape(target),
        ),
    )
}

/// The end of the `m.login.sso` fallback: tells the opening client, which then retries.
fn reauth_done() -> Response {
    page(
        StatusCode::OK,
        "Authentication complete",
        "<p>You can close this window and go back to your app.</p>\
         <script>if (window.onAuthDone) { window.onAuthDone(); } \
         else if (window.opener && window.opener.postMessage) \
         { window.opener.postMessage(\"authDone\", \"*\"); }</script>",
    )
}

#[derive(Deserialize)]
pub struct FallbackQuery {
    session: Option<String>,
}

/// The cookie holding the fallback page's anti-forgery value: SameSite=Strict, so a form
/// posted from another site never carries it.
const CSRF_COOKIE: &str = "kith_uia_csrf";

/// Whom a UIA session is for, what it would let them do, and the providers (ID, name)
/// they can sign in again with.
struct ReauthContext {
    user: String,
    action: &'static str,
    providers: Vec<(String, String)>,
}

fn reauth_context(
    state: &AppState,
    auth_type: &str,
    session: Option<&str>,
) -> Result<ReauthContext> {
    if auth_type != "m.login.sso" {
        return Err(Error::not_found("No fallback page for this stage"));
    }
    let session = session.ok_or_else(|| Error::missing_param("Missing session"))?;
    let (user, action) = state
        .auth
        .uia_session_info(session)
        .ok_or_else(|| Error::not_found("Unknown or expired session"))?;
    let user_id = UserId::parse(user.as_str()).map_err(Error::internal)?;
    let providers = state
        .auth
        .identity_links(&user_id)?
        .into_iter()
        .filter_map(|(idp, _, _)| state.auth.sso_provider(&idp).ok())
        .map(|p| (p.config.id.clone(), p.config.name.clone()))
        .collect();
    Ok(ReauthContext {
        user,
        action,
        providers,
    })
}

/// `GET /_matrix/client/v3/auth/{authType}/fallback/web?session=`: for `m.login.sso`, a
/// page that says who asks for what, with a button per provider the user signs in with.
/// Signing in is started only by that button (a POST carrying the page's anti-forgery
/// value), so a link alone, sent by someone holding a stolen access token, cannot get
/// the user to approve their request unknowingly.
pub async fn fallback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(auth_type): Path<String>,
    Query(query): Query<FallbackQuery>,
) -> Response {
    let session = query.session.as_deref();
    let ReauthContext {
        user,
        action,
        providers,
    } = match reauth_context(&state, &auth_type, session) {
        Ok(context) => context,
        Err(e) => return failure(&headers, e),
    };
    let csrf = crate::util::random_string(32);
    let session = escape(session.unwrap_or_default());
    let buttons: String = providers
        .iter()
        .map(|(id, name)| {
            format!(
                "<form method=\"post\"><input type=\"hidden\" name=\"session\" value=\"{session}\">\
                 <input type=\"hidden\" name=\"idp\" value=\"{}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\">Confirm by signing in with {}</button></form>",
                escape(id),
                escape(name)
            )
        })
        .collect();
    let mut response = page(
        StatusCode::OK,
        "Confirm it is you",
        &format!(
            "<p>An app signed in as <b>{}</b> asks to <b>{action}</b>.</p>\
             <p>If you did not ask for this, close this page: someone else may have access \
             to your account.</p>{buttons}",
            escape(&user)
        ),
    );
    let cookie = format!(
        "{CSRF_COOKIE}={csrf}; Path=/_matrix/client/; Max-Age=900; HttpOnly; SameSite=Strict"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub struct FallbackForm {
    session: String,
    idp: String,
    csrf: String,
}

/// `POST /_matrix/client/v3/auth/{authType}/fallback/web`: the fallback page's button; on
/// to the provider to sign in again.
pub async fn fallback_confirm(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    Path(auth_type): Path<String>,
    form: Result<axum::Form<FallbackForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let result = async {
        let axum::Form(form) = form.map_err(|_| Error::missing_param("Incomplete form"))?;
        let context = reauth_context(&state, &auth_type, Some(&form.session))?;
        if cookie(&headers, CSRF_COOKIE) != Some(form.csrf.as_str()) {
            return Err(Error::forbidden(
                "Open the confirmation page again: this form did not come from it",
            ));
        }
        if !context.providers.iter().any(|(id, _)| *id == form.idp) {
            return Err(Error::not_found("You do not sign in with this provider"));
        }
        let purpose = SsoPurpose::Reauth {
            uia_session: form.session.clone(),
        };
        to_provider(state.auth.sso_start(&form.idp, purpose, client_ip).await?)
    };
    result.await.unwrap_or_else(|e| failure(&headers, e))
}
