//! The parts of Zammad's REST API the ticket bridge uses
//! (`../reference/zammad-rest.md`), with `Authorization: Token token=…`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::bridge::{Answer, error_text, scrub};

/// Why a request did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Worth retrying: Zammad down, restarting, overloaded, or no answer.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the token is wrong or lacks a permission. It never
    /// fixes itself.
    Unauthorized(String),
    /// 404: the ticket (or user) is gone.
    NotFound,
    /// Any other refusal (422 "group not found", 400, 3xx).
    Refused { cause: &'static str, reason: String },
}

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
}

pub struct ZammadApi {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl ZammadApi {
    pub fn new(client: reqwest::Client, base: &str, token: &str) -> Self {
        ZammadApi {
            client,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> ApiResult<Value> {
        self.call_with(method, path, &[], body).await
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> ApiResult<Value> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            ApiError::Refused {
                cause: "bad_url",
                reason: format!("{}{path} is not a URL: {e}", self.base),
            }
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.client.request(method, url).header(
            reqwest::header::AUTHORIZATION,
            format!("Token token={}", self.token),
        );
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let secrets = [self.token.clone()];
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Err(ApiError::Transient {
                    reason: scrub(&error_text(error), &secrets),
                    retry_after: None,
                });
            }
        };
        let answer = Answer::read(response).await;
        let status = answer.status;
        let summary = || {
            let body: String = answer.body.chars().take(300).collect();
            scrub(&format!("HTTP {status} from {path}: {body}"), &secrets)
        };
        if status.is_success() {
            if answer.body.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&answer.body).map_err(|e| ApiError::Refused {
                cause: "bad_answer",
                reason: format!("{path} answered {status} with what is not JSON: {e}"),
            });
        }
        Err(match status.as_u16() {
            401 | 403 => ApiError::Unauthorized(summary()),
            404 => ApiError::NotFound,
            408 | 429 | 500..=599 => ApiError::Transient {
                reason: summary(),
                retry_after: answer.retry_after,
            },
            422 if answer.body.contains("group") => ApiError::Refused {
                cause: "group_not_found",
                reason: summary(),
            },
            422 => ApiError::Refused {
                cause: "unprocessable",
                reason: summary(),
            },
            _ => ApiError::Refused {
                cause: "refused",
                reason: summary(),
            },
        })
    }

    /// The token's own user: checks the token before anything is written.
    pub async fn me(&self) -> ApiResult<Value> {
        self.call(reqwest::Method::GET, "/api/v1/users/me", None)
            .await
    }

    pub async fn search_users(&self, query: &str) -> ApiResult<Vec<User>> {
        let found = self
            .call_with(
                reqwest::Method::GET,
                "/api/v1/users/search",
                &[("query", query), ("limit", "100")],
                None,
            )
            .await?;
        Ok(serde_json::from_value(found).unwrap_or_default())
    }

    /// A customer with `phone`, named after it (Zammad needs a name).
    pub async fn create_customer(&self, lastname: &str, phone: Option<&str>) -> ApiResult<u64> {
        let mut body = json!({
            "firstname": "Caller",
            "lastname": lastname,
            "roles": ["Customer"],
            "note": "Created by sipgate-sidecar for a missed call.",
        });
        if let Some(phone) = phone {
            body["phone"] = json!(phone);
        }
        let user = self
            .call(reqwest::Method::POST, "/api/v1/users", Some(body))
            .await?;
        id_of(&user, "the created user")
    }

    pub async fn create_ticket(
        &self,
        title: &str,
        group: &str,
        customer_id: u64,
        note: &str,
    ) -> ApiResult<u64> {
        let body = json!({
            "title": title,
            "group": group,
            "customer_id": customer_id,
            "article": {"subject": title, "body": note, "type": "note", "internal": true},
        });
        let ticket = self
            .call(reqwest::Method::POST, "/api/v1/tickets", Some(body))
            .await?;
        id_of(&ticket, "the created ticket")
    }

    /// The ticket's state by name (`new`, `open`, `closed`, …); `None` when
    /// the ticket is gone.
    pub async fn ticket_state(&self, id: u64) -> ApiResult<Option<String>> {
        let path = format!("/api/v1/tickets/{id}?expand=true");
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(ticket) => Ok(Some(
                ticket
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("open")
                    .to_string(),
            )),
            Err(ApiError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn add_note(&self, ticket_id: u64, subject: &str, note: &str) -> ApiResult<()> {
        let body = json!({
            "ticket_id": ticket_id, "subject": subject, "body": note,
            "type": "note", "internal": true,
        });
        self.call(reqwest::Method::POST, "/api/v1/ticket_articles", Some(body))
            .await
            .map(drop)
    }

    /// Closes the ticket; with `note` (subject, body) as its last article,
    /// in the same request.
    pub async fn close(&self, ticket_id: u64, note: Option<(&str, &str)>) -> ApiResult<()> {
        let mut body = json!({"state": "closed"});
        if let Some((subject, note)) = note {
            body["article"] =
                json!({"subject": subject, "body": note, "type": "note", "internal": true});
        }
        let path = format!("/api/v1/tickets/{ticket_id}");
        self.call(reqwest::Method::PUT, &path, Some(body))
            .await
            .map(drop)
    }

    /// Whether an article of the ticket contains `marker`.
    pub async fn has_article_with(&self, ticket_id: u64, marker: &str) -> ApiResult<bool> {
        let path = format!("/api/v1/ticket_articles/by_ticket/{ticket_id}");
        let articles = self.call(reqwest::Method::GET, &path, None).await?;
        Ok(articles.as_array().is_some_and(|list| {
            list.iter().any(|a| {
                a.get("body")
                    .and_then(Value::as_str)
                    .is_some_and(|body| body.contains(marker))
            })
        }))
    }

    /// Tickets whose articles mention `marker` (Zammad's search: title,
    /// number and articles, also without Elasticsearch).
    pub async fn search_tickets(&self, marker: &str) -> ApiResult<Vec<u64>> {
        let quoted = format!("\"{marker}\"");
        let found = self
            .call_with(
                reqwest::Method::GET,
                "/api/v1/tickets/search",
                &[("query", &quoted), ("limit", "10")],
                None,
            )
            .await?;
        Ok(found
            .get("tickets")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default())
    }
}

fn id_of(value: &Value, what: &str) -> ApiResult<u64> {
    value
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::Refused {
            cause: "bad_answer",
            reason: format!("{what} came back without an id"),
        })
}
