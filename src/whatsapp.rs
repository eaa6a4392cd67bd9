//! The WhatsApp Business Cloud API client, and the development notifier that logs instead.
//!
//! `POST {api_base_url}/{phone_number_id}/messages` with `Authorization: Bearer {access_token}` and a
//! template message. 2xx is sent; 429 and 5xx (and network failures) are retried by the caller with
//! backoff, honouring `Retry-After`; other 4xx are failures, never retried.

use std::sync::Arc;
use std::time::Duration;

use scan2order_actors::notifier::{
    MessageSender, SendFuture, SendOutcome, TemplateMessage, Templates,
};
use serde_json::{json, Value};

use crate::config::{Secret, WhatsAppMode, WhatsAppSettings};

/// Longest error text kept from an API answer.
const MAX_ERROR_TEXT: usize = 300;

pub struct CloudApiClient {
    http: reqwest::Client,
    endpoint: String,
    access_token: Secret,
    language: String,
}

impl CloudApiClient {
    pub fn new(settings: &WhatsAppSettings) -> anyhow::Result<CloudApiClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(CloudApiClient {
            http,
            endpoint: format!(
                "{}/{}/messages",
                settings.api_base_url.trim_end_matches('/'),
                settings.phone_number_id
            ),
            access_token: settings.access_token.clone(),
            language: settings.language.clone(),
        })
    }

    /// The request body for a template message, exactly as PROTOCOL.md specifies.
    pub fn body(&self, msg: &TemplateMessage) -> Value {
        template_body(msg, &self.language)
    }

    async fn post(&self, msg: &TemplateMessage) -> SendOutcome {
        let res = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.access_token.expose())
            .json(&self.body(msg))
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                return SendOutcome::Retry {
                    after: None,
                    reason: format!("request failed: {}", without_url(&e)),
                }
            }
        };
        let status = res.status();
        if status.is_success() {
            return SendOutcome::Sent;
        }
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = res.text().await.unwrap_or_default();
        let reason = format!("HTTP {}: {}", status.as_u16(), api_error_text(&text));
        if status.as_u16() == 429 || status.is_server_error() {
            SendOutcome::Retry {
                after: retry_after,
                reason,
            }
        } else {
            SendOutcome::Failed(reason)
        }
    }
}

/// The Cloud API error message if the body has one, else the start of the body.
fn api_error_text(body: &str) -> String {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string());
    msg.chars().take(MAX_ERROR_TEXT).collect()
}

/// reqwest errors print the URL; the endpoint carries no secret, but keep the text short and generic.
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "transport error".into()
    }
}

pub fn template_body(msg: &TemplateMessage, language: &str) -> Value {
    let params: Vec<Value> = msg
        .body_params
        .iter()
        .map(|p| json!({"type": "text", "text": p}))
        .collect();
    let mut components = vec![json!({"type": "body", "parameters": params})];
    if let Some(code) = &msg.code_button {
        components.push(json!({
            "type": "button",
            "sub_type": "url",
            "index": "0",
            "parameters": [{"type": "text", "text": code}]
        }));
    }
    json!({
        "messaging_product": "whatsapp",
        "to": msg.to,
        "type": "template",
        "template": {
            "name": msg.template,
            "language": {"code": language},
            "components": components
        }
    })
}

impl MessageSender for CloudApiClient {
    fn send<'a>(&'a self, msg: &'a TemplateMessage) -> SendFuture<'a> {
        Box::pin(self.post(msg))
    }
}

/// The development notifier: writes each message, code included, to the log. Never for production.
pub struct LogSender {
    language: String,
}

impl MessageSender for LogSender {
    fn send<'a>(&'a self, msg: &'a TemplateMessage) -> SendFuture<'a> {
        Box::pin(async move {
            tracing::warn!(
                target: "scan2order::dev_whatsapp",
                to = %scan2order_schema::domain::mask_phone(&msg.to),
                template = %msg.template,
                language = %self.language,
                params = ?msg.body_params,
                "development notifier: WhatsApp message not sent, logged instead"
            );
            SendOutcome::Sent
        })
    }
}

/// The sender the settings ask for.
pub fn sender_from(settings: &WhatsAppSettings) -> anyhow::Result<Arc<dyn MessageSender>> {
    Ok(match settings.mode {
        WhatsAppMode::Cloud => Arc::new(CloudApiClient::new(settings)?),
        WhatsAppMode::Log => {
            tracing::warn!(
                "!!! whatsapp.mode = \"log\": one-time codes and guest messages are written to this log and NOT \
                 sent. This development notifier is not for production. !!!"
            );
            Arc::new(LogSender {
                language: settings.language.clone(),
            })
        }
    })
}

pub fn templates_from(settings: &WhatsAppSettings) -> Templates {
    Templates {
        order_received: settings.order_received_template.clone(),
        order_ready: settings.order_ready_template.clone(),
        order_cancelled: settings.order_cancelled_template.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otp_bodies_carry_the_code_in_body_and_copy_button() {
        let msg = TemplateMessage {
            to: "447700900123".into(),
            template: "scan2order_code".into(),
            body_params: vec!["123456".into()],
            code_button: Some("123456".into()),
        };
        let body = template_body(&msg, "en");
        assert_eq!(
            body,
            json!({
                "messaging_product": "whatsapp",
                "to": "447700900123",
                "type": "template",
                "template": {
                    "name": "scan2order_code",
                    "language": {"code": "en"},
                    "components": [
                        {"type": "body", "parameters": [{"type": "text", "text": "123456"}]},
                        {"type": "button", "sub_type": "url", "index": "0",
                         "parameters": [{"type": "text", "text": "123456"}]}
                    ]
                }
            })
        );
    }

    #[test]
    fn api_errors_are_summarised() {
        assert_eq!(
            api_error_text(r#"{"error":{"message":"Invalid parameter","code":100}}"#),
            "Invalid parameter"
        );
        assert_eq!(api_error_text(&"x".repeat(1000)).len(), MAX_ERROR_TEXT);
    }
}
