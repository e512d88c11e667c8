//! Sign-in with an OpenID Connect provider (legacy Matrix SSO, auth-service): the redirect
//! to the provider, kith's callback page, the page that confirms an unknown client before
//! handing it a login token, and the `m.login.sso` stage's fallback page for UIA.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ruma::UserId;
use serde::Deserialize;

use super::pages::{escape, page, wants_html};
use crate::gateway::{Error, Result};
use crate::services::AppState;
use crate::services::auth::sso::{CALLBACK_PATH, SsoPurpose, SsoStart};

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
    headers: HeaderMap,
    Query(query): Query<RedirectQuery>,
) -> Response {
    let providers = state.auth.sso_providers();
    let result = match providers {
        [] => Err(Error::not_found("No identity provider is configured")),
        [only] => start_login(&state, &only.config.id, &query).await,
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
    headers: HeaderMap,
    Path(idp): Path<String>,
    Query(query): Query<RedirectQuery>,
) -> Response {
    start_login(&state, &idp, &query)
        .await
        .unwrap_or_else(|e| failure(&headers, e))
}

async fn start_login(state: &AppState, idp: &str, query: &RedirectQuery) -> Result<Response> {
    let redirect_url = checked_redirect_url(query)?;
    let start = state
        .auth
        .sso_start(idp, SsoPurpose::Login { redirect_url })
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
    let mut response = finish(&state, &headers, query)
        .await
        .unwrap_or_else(|e| failure(&headers, e));
    // The sign-in's cookie has served its purpose either way.
    if let Some(name) = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('=').map(|(name, _)| name.to_owned()))
        .find(|name| name.starts_with("kith_sso_"))
    {
        let expired = format!("{name}=; Path={CALLBACK_PATH}; Max-Age=0; HttpOnly; SameSite=Lax");
        if let Ok(value) = HeaderValue::from_str(&expired) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn finish(state: &AppState, headers: &HeaderMap, query: CallbackQuery) -> Result<Response> {
    let sign_in = query
        .state
        .as_deref()
        .ok_or_else(|| Error::missing_param("Missing state"))?;
    if let Some(error) = &query.error {
        // Used up, so it cannot be replayed with a code later.
        state.auth.sso_cancel(sign_in);
        return Err(Error::forbidden(format!(
            "The identity provider did not sign you in: {error}"
        )));
    }
    let code = query
        .code
        .as_deref()
        .ok_or_else(|| Error::missing_param("Missing code"))?;
    let (purpose, identity) = state.auth.sso_finish(sign_in, headers, code).await?;
    match purpose {
        SsoPurpose::Login { redirect_url } => {
            let user_id = state.sso_user(&identity).await?;
            let token = state.auth.issue_login_token(&user_id).await?;
            let mut target = url::Url::parse(&redirect_url).map_err(Error::internal)?;
            target.query_pairs_mut().append_pair("loginToken", &token);
            let allowed = &state.config.sso.allowed_redirect_urls;
            if allowed
                .iter()
                .any(|prefix| redirect_url.starts_with(prefix))
            {
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
    idp: Option<String>,
}

/// `GET /_matrix/client/v3/auth/{authType}/fallback/web?session=`: for `m.login.sso`, a
/// page to sign in again at one of the user's providers; choosing one (`&idp=`) goes there.
pub async fn fallback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(auth_type): Path<String>,
    Query(query): Query<FallbackQuery>,
) -> Response {
    let result = async {
        if auth_type != "m.login.sso" {
            return Err(Error::not_found("No fallback page for this stage"));
        }
        let session = query
            .session
            .as_deref()
            .ok_or_else(|| Error::missing_param("Missing session"))?;
        let user = state
            .auth
            .uia_session_user(session)
            .ok_or_else(|| Error::not_found("Unknown or expired session"))?;
        let user_id = UserId::parse(user.as_str()).map_err(Error::internal)?;
        let linked: Vec<String> = state
            .auth
            .identity_links(&user_id)?
            .into_iter()
            .map(|(idp, _, _)| idp)
            .filter(|idp| state.auth.sso_provider(idp).is_ok())
            .collect();
        if let Some(idp) = &query.idp {
            if !linked.contains(idp) {
                return Err(Error::not_found("You do not sign in with this provider"));
            }
            let purpose = SsoPurpose::Reauth {
                uia_session: session.to_owned(),
            };
            return to_provider(state.auth.sso_start(idp, purpose).await?);
        }
        let links: String = linked
            .iter()
            .filter_map(|idp| state.auth.sso_provider(idp).ok())
            .map(|p| {
                let link = format!(
                    "?session={}&idp={}",
                    url::form_urlencoded::byte_serialize(session.as_bytes()).collect::<String>(),
                    p.config.id
                );
                format!(
                    "<li><a href=\"{}\">Sign in again with {}</a></li>",
                    escape(&link),
                    escape(&p.config.name)
                )
            })
            .collect();
        Ok(page(
            StatusCode::OK,
            "Confirm it is you",
            &format!("<p>To continue, sign in again.</p><ul>{links}</ul>"),
        ))
    };
    result.await.unwrap_or_else(|e| failure(&headers, e))
}
