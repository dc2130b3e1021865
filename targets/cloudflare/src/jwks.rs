//! The isolate's JWKS fetch: the key ring (`tollgate-host-kit`) decides when; this
//! performs it with the Workers `fetch`.

use tollgate_host_kit::Fetched;
use worker::{Fetch, Url};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

pub async fn download(url: String) -> Fetched {
    let url = Url::parse(&url).map_err(|e| e.to_string())?;
    let mut response = Fetch::Url(url).send().await.map_err(|e| e.to_string())?;
    if response.status_code() != 200 {
        return Err(format!("status {}", response.status_code()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    if text.len() > MAX_JWKS_BYTES {
        return Err("document over 1 MiB".into());
    }
    Ok(text)
}
