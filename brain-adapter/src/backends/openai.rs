//! The OpenAI-compatible backend: a chat completion with a JSON-schema answer format, for
//! any endpoint that speaks the API (OpenAI, Ollama, vLLM, llama.cpp server, …).

use mc_proto as pb;
use serde_json::json;

use super::{Backend, BackendError};
use crate::config::OpenAiConfig;

pub struct OpenAi {
    pub cfg: OpenAiConfig,
    client: reqwest::Client,
}

impl OpenAi {
    pub fn new(cfg: OpenAiConfig) -> Result<OpenAi, String> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("openai client: {e}"))?;
        Ok(OpenAi { cfg, client })
    }
}

#[async_trait::async_trait]
impl Backend for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn decide(&self, req: &pb::DecideRequest) -> Result<pb::DecideResponse, BackendError> {
        let body = json!({
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": "You are the decision-maker of a ticket system. Reply with one JSON object that matches the schema."},
                {"role": "user", "content": crate::prompt::build(req)},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "decision", "strict": true, "schema": crate::prompt::schema()},
            },
            "temperature": 0,
        });
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let mut r = self.client.post(&url).json(&body);
        if !self.cfg.api_key_env.is_empty()
            && let Ok(key) = std::env::var(&self.cfg.api_key_env)
        {
            r = r.bearer_auth(key);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| BackendError::Unavailable(format!("POST {url}: {e}")))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.map_err(|e| {
            BackendError::Unavailable(format!("{url} answered {status} with no JSON: {e}"))
        })?;
        if !status.is_success() {
            return Err(BackendError::Unavailable(format!(
                "{url} answered {status}: {v}"
            )));
        }
        let content = v
            .pointer("/choices/0/message/content")
            .and_then(|c| c.as_str())
            .ok_or_else(|| {
                BackendError::OffContract("no choices[0].message.content in the response".into())
            })?;
        let mut a = crate::prompt::parse(content).map_err(BackendError::OffContract)?;
        a.brain = "openai".into();
        Ok(a)
    }
}
