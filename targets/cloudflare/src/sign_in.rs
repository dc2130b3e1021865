//! Browser sign-in (`[sso]`) in the isolate: the token request the core describes, sent
//! with the Workers `fetch` (its randomness is the host kit's `js_entropy`).

use policy_core::TokenExchange;
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

/// Sends the token request: the status and body, or `None` when no whole answer came.
pub async fn send(request: &TokenExchange) -> Option<(u16, Vec<u8>)> {
    match post(request).await {
        Ok(answer) => Some(answer),
        Err(e) => {
            worker::console_log!(
                "{}",
                serde_json::json!({ "tollgate_error": format!("sign-in token request to {}: {e}", request.url) })
            );
            None
        }
    }
}

async fn post(request: &TokenExchange) -> worker::Result<(u16, Vec<u8>)> {
    let headers = Headers::new();
    for header in &request.headers {
        headers.set(header.name(), header.value())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual)
        .with_body(Some(request.body.clone().into()));
    let mut response = Fetch::Request(Request::new_with_init(&request.url, &init)?)
        .send()
        .await?;
    Ok((response.status_code(), response.bytes().await?))
}
