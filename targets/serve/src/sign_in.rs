//! A browser sign-in's token request (`[sso]`): the core checked the provider's callback
//! and described the request; serve sends it and hands back what came.

use policy_core::TokenExchange;

use crate::proxy::Shared;

impl Shared {
    /// Sends `request` to the provider's token endpoint: the status and body (at most
    /// [`TokenExchange::MAX_RESPONSE_BYTES`]), or `None` when no whole answer came in time.
    pub async fn send_token_request(&self, request: &TokenExchange) -> Option<(u16, Vec<u8>)> {
        let answer = tokio::time::timeout(self.timeouts.jwks_request, self.post(request)).await;
        let failure = match answer {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {:?}", self.timeouts.jwks_request),
        };
        // Counted with the decision it leads to (reason `sign_in_exchange_failed`).
        eprintln!(
            "tollgate: sign-in token request to {}: {failure}",
            request.url
        );
        None
    }

    async fn post(&self, request: &TokenExchange) -> Result<(u16, Vec<u8>), String> {
        let mut post = self
            .fetch_client
            .post(&request.url)
            .body(request.body.clone());
        for header in &request.headers {
            post = post.header(header.name(), header.value());
        }
        let mut response = post.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > TokenExchange::MAX_RESPONSE_BYTES {
                return Err("answer over 64 KiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}
