//! Translation between Workers requests/responses and the engine's facts and decisions.

use policy_core::forwarding::{client_address_headers, connection_tokens};
use policy_core::Decision;
use tollgate_host_kit::{IngestError, Ingested};
use wasm_bindgen::JsValue;
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response, Result};

/// `/path?query` of the request URL, exactly as the runtime hands it over.
fn path_and_query(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

/// The request as the engine sees it (its body, when the decision reads it, is added
/// by the caller after the pre-body check).
pub fn ingest(req: &Request) -> std::result::Result<Ingested<String>, IngestError> {
    let url = req.inner().url();
    let pq = path_and_query(&url);
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    let client_ip = req.headers().get("cf-connecting-ip").ok().flatten();
    let mut ingested = Ingested::new(
        req.method().to_string(),
        path.to_owned(),
        query.to_owned(),
        client_ip,
    );
    for (name, value) in req.headers().entries() {
        ingested.header(name, value)?;
    }
    Ok(ingested)
}

pub fn deny(decision: &Decision) -> Result<Response> {
    let (content_type, body) = decision.denial_body();
    let headers = Headers::new();
    headers.set("content-type", content_type)?;
    for header in &decision.headers {
        headers.append(header.name(), header.value())?;
    }
    Ok(Response::ok(body)?
        .with_status(decision.status)
        .with_headers(headers))
}

pub async fn to_origin(
    req: Request,
    origin: &str,
    client_ip: Option<&str>,
    decision: &Decision,
    buffered: Option<Vec<u8>>,
) -> Result<Response> {
    let url = format!("{origin}{}", path_and_query(&req.inner().url()));
    let connection_value = req.headers().get("connection")?;
    let connection = connection_tokens(connection_value.as_deref());
    let headers = Headers::new();
    for (name, value) in req.headers().entries() {
        // Cloudflare's own `cf-*` headers describe the edge, not the client.
        if decision.forwards_header(&name, &connection)
            && !name.to_ascii_lowercase().starts_with("cf-")
        {
            headers.append(&name, &value)?;
        }
    }
    for header in &decision.set {
        headers.set(header.name(), header.value())?;
    }
    if let Some(ip) = client_ip {
        for (name, value) in client_address_headers(ip) {
            headers.set(name, &value)?;
        }
    }
    let method = req.method();
    let mut init = RequestInit::new();
    init.with_method(method.clone())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if !matches!(method, Method::Get | Method::Head) {
        let body: Option<JsValue> = match buffered {
            Some(bytes) => Some(js_sys::Uint8Array::from(bytes.as_slice()).into()),
            // Stream the body through: never held whole in the isolate.
            None => req.inner().body().map(JsValue::from),
        };
        init.with_body(body);
    }
    Fetch::Request(Request::new_with_init(&url, &init)?)
        .send()
        .await
}
