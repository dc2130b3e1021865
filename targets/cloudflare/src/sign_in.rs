//! Browser sign-in (`[sso]`) in the isolate: the randomness a sign-in draws from
//! (`crypto.getRandomValues`) and the token request the core describes, sent with the
//! Workers `fetch`.

use policy_core::TokenExchange;
use wasm_bindgen::JsCast;
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

/// 32 bytes from the isolate's `crypto.getRandomValues`, or `None` (a sign-in then fails
/// closed).
pub fn entropy() -> Option<[u8; 32]> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into()).ok()?;
    let fill = js_sys::Reflect::get(&crypto, &"getRandomValues".into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    let array = js_sys::Uint8Array::new_with_length(32);
    fill.call1(&crypto, &array).ok()?;
    let mut bytes = [0u8; 32];
    array.copy_to(&mut bytes);
    Some(bytes)
}

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
