//! The missed-call bridge: every inbound call nobody took becomes a
//! callback ticket in Zammad (one open ticket per caller; later missed calls
//! add a note), and a later call that reaches the caller adds a note and,
//! with `--close-when-reached`, closes it.
//!
//! Exactly once, through restarts and outages: the bridge records in its
//! [`ledger`] which ticket is open for which number and the last event whose
//! effect is written. Before each write to Zammad it records the event as
//! pending; a retry of a pending event (after a crash, or an answer lost to
//! a timeout) first looks in Zammad for the event's marker (the call id in
//! the article), in the ticket's articles or through ticket search, and
//! writes only when it is not there.

pub mod api;
pub mod classify;
pub mod ledger;

use std::time::Duration;

use tokio::sync::Mutex;

use api::{ApiError, ApiResult, ZammadApi};
use classify::{Concern, Include, classify, marker};
use ledger::Ledger;

use super::{Verdict, delivery::Sink, http_client};
use crate::{
    config::{DeliveryPolicy, TicketsTarget, UnknownCaller},
    numbers::normalize_number,
    proto,
    telemetry::names,
};

pub struct TicketsSink {
    api: ZammadApi,
    options: TicketsTarget,
    include: Include,
    described: String,
    ledger: Mutex<Ledger>,
}

/// A state in which Zammad takes no more notes for the caller.
fn is_settled(state: &str) -> bool {
    matches!(state, "closed" | "merged" | "removed")
}

impl TicketsSink {
    pub fn new(
        options: &TicketsTarget,
        cursor: &std::path::Path,
        policy: &DeliveryPolicy,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&options.zammad_url).map_err(|e| {
            anyhow::anyhow!("--zammad-url is not a URL like https://zammad.example.com: {e}")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("--zammad-url must be an http:// or https:// URL");
        }
        if options.api_token.expose().trim().is_empty() {
            anyhow::bail!(
                "the Zammad API token is empty: set --api-token-file or SIDECAR_ZAMMAD_API_TOKEN(_FILE)"
            );
        }
        if options.group.trim().is_empty() {
            anyhow::bail!("--group names the Zammad group the callback tickets go to");
        }
        let ledger = Ledger::load(Ledger::path_for(cursor))?;
        Ok(TicketsSink {
            api: ZammadApi::new(
                http_client(policy)?,
                &options.zammad_url,
                options.api_token.expose(),
            ),
            described: format!(
                "{} (group {})",
                url.as_str().trim_end_matches('/'),
                options.group
            ),
            include: Include {
                blocked: options.include_blocked,
                anonymous: options.include_anonymous,
            },
            options: options.clone(),
            ledger: Mutex::new(ledger),
        })
    }

    /// E.164 digits of a number Zammad stores as typed; `None` if it is none.
    fn normalised(&self, typed: &str) -> Option<String> {
        normalize_number(typed, &self.options.country_code)
            .ok()
            .filter(|n| n != "anonymous")
    }

    /// The Zammad user whose phone or mobile is `number`: from the ledger,
    /// else through user search (every result compared after
    /// normalisation, as the search matches text), else created (or `None`
    /// with `--unknown-caller skip`).
    async fn customer(&self, ledger: &mut Ledger, number: &str) -> ApiResult<Option<u64>> {
        if let Some(&id) = ledger.record.users.get(number) {
            return Ok(Some(id));
        }
        let anonymous = classify::is_anonymous(number);
        let found = if anonymous {
            self.find_named(ANONYMOUS_NAME).await?
        } else {
            self.find_by_number(number).await?
        };
        let id = match found {
            Some(id) => id,
            None if self.options.unknown_caller == UnknownCaller::Skip && !anonymous => {
                return Ok(None);
            }
            None if anonymous => self.api.create_customer(ANONYMOUS_NAME, None).await?,
            None => {
                let shown = classify::shown(number);
                self.api.create_customer(&shown, Some(&shown)).await?
            }
        };
        ledger.record.users.insert(number.to_string(), id);
        Ok(Some(id))
    }

    async fn find_by_number(&self, number: &str) -> ApiResult<Option<u64>> {
        // The digits; then the last seven, which a search over numbers
        // typed with spaces ("+49 211 1234567") matches as a word.
        let mut queries = vec![number.to_string()];
        if number.len() > 7 {
            queries.push(number[number.len() - 7..].to_string());
        }
        for query in queries {
            for user in self.api.search_users(&query).await? {
                let matches = [user.phone.as_deref(), user.mobile.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|typed| self.normalised(typed))
                    .any(|n| n == number);
                if matches {
                    return Ok(Some(user.id));
                }
            }
        }
        Ok(None)
    }

    async fn find_named(&self, name: &str) -> ApiResult<Option<u64>> {
        Ok(self.api.search_users(name).await?.first().map(|u| u.id))
    }

    /// The open callback ticket of `number`, as Zammad has it now: a ticket
    /// closed, merged or deleted there is forgotten.
    async fn open_ticket(&self, ledger: &mut Ledger, number: &str) -> ApiResult<Option<u64>> {
        let Some(&id) = ledger.record.tickets.get(number) else {
            return Ok(None);
        };
        match self.api.ticket_state(id).await? {
            Some(state) if !is_settled(&state) => Ok(Some(id)),
            gone => {
                tracing::info!(
                    bridge = self.name(),
                    ticket = id,
                    number,
                    state = gone.as_deref().unwrap_or("deleted"),
                    "the caller's callback ticket is settled in Zammad; the next missed call opens a new one"
                );
                ledger.record.tickets.remove(number);
                Ok(None)
            }
        }
    }

    /// Records `seq` as being written, durably, before the write.
    fn begin(&self, ledger: &mut Ledger, seq: u64) -> ApiResult<()> {
        ledger.record.pending = Some(seq);
        save(ledger)
    }

    async fn missed(
        &self,
        ledger: &mut Ledger,
        event: &proto::CallEvent,
        call: &proto::Call,
        number: &str,
        retried: bool,
    ) -> ApiResult<()> {
        let mark = marker(&call.call_id);
        let note = classify::missed_note(call);
        let title = classify::ticket_title(number);
        let anonymous = classify::is_anonymous(number);
        if !anonymous && let Some(ticket) = self.open_ticket(ledger, number).await? {
            if retried && self.api.has_article_with(ticket, &mark).await? {
                tracing::info!(bridge = self.name(), ticket, call_id = %call.call_id, "the note was written before the restart");
            } else {
                self.begin(ledger, event.seq)?;
                self.api.add_note(ticket, &title, &note).await?;
                metrics::counter!(names::TICKET_NOTES).increment(1);
                tracing::info!(bridge = self.name(), ticket, call_id = %call.call_id, number, "missed call noted on the open callback ticket");
            }
            return Ok(());
        }
        if retried && let Some(&ticket) = self.api.search_tickets(&mark).await?.first() {
            tracing::info!(bridge = self.name(), ticket, call_id = %call.call_id, "the ticket was created before the restart");
            if !anonymous {
                ledger.record.tickets.insert(number.to_string(), ticket);
            }
            return Ok(());
        }
        let Some(customer) = self.customer(ledger, number).await? else {
            tracing::info!(bridge = self.name(), call_id = %call.call_id, number, "missed call from a caller Zammad does not know: no ticket (--unknown-caller skip)");
            return Ok(());
        };
        self.begin(ledger, event.seq)?;
        let ticket = match self
            .api
            .create_ticket(&title, &self.options.group, customer, &note)
            .await
        {
            // The user was deleted in Zammad: look it up (or create it) again.
            Err(ApiError::Refused { reason, .. }) if reason.contains("customer") => {
                ledger.record.users.remove(number);
                let Some(customer) = self.customer(ledger, number).await? else {
                    return Ok(());
                };
                self.api
                    .create_ticket(&title, &self.options.group, customer, &note)
                    .await?
            }
            other => other?,
        };
        metrics::counter!(names::TICKETS_CREATED).increment(1);
        tracing::info!(bridge = self.name(), ticket, call_id = %call.call_id, number, "callback ticket created for a missed call");
        if !anonymous {
            ledger.record.tickets.insert(number.to_string(), ticket);
        }
        Ok(())
    }

    async fn reached(
        &self,
        ledger: &mut Ledger,
        event: &proto::CallEvent,
        call: &proto::Call,
        number: &str,
        retried: bool,
    ) -> ApiResult<()> {
        let Some(ticket) = self.open_ticket(ledger, number).await? else {
            return Ok(());
        };
        let mark = marker(&call.call_id);
        let title = classify::ticket_title(number);
        let note = classify::reached_note(call);
        let close = self.options.close_when_reached;
        let written = retried && self.api.has_article_with(ticket, &mark).await?;
        if !written {
            self.begin(ledger, event.seq)?;
            if close {
                self.api.close(ticket, Some((&title, &note))).await?;
            } else {
                self.api.add_note(ticket, &title, &note).await?;
            }
            metrics::counter!(names::TICKET_NOTES).increment(1);
        } else if close {
            // The note is there but the ticket is open (it was written
            // without the close): close it without a second note.
            self.api.close(ticket, None).await?;
        }
        if close {
            metrics::counter!(names::TICKETS_CLOSED).increment(1);
            ledger.record.tickets.remove(number);
        }
        tracing::info!(bridge = self.name(), ticket, call_id = %call.call_id, number, closed = close, "caller reached; noted on the callback ticket");
        Ok(())
    }
}

const ANONYMOUS_NAME: &str = "Anonymous caller";

fn save(ledger: &Ledger) -> ApiResult<()> {
    ledger.save().map_err(|e| ApiError::Transient {
        reason: format!("{e:#}"),
        retry_after: None,
    })
}

fn verdict(error: ApiError, call_id: &str) -> Verdict {
    match error {
        ApiError::Transient {
            reason,
            retry_after,
        } => Verdict::Transient {
            reason,
            retry_after,
        },
        ApiError::Unauthorized(reason) => {
            metrics::counter!(names::TICKET_REFUSALS, "cause" => "unauthorized").increment(1);
            Verdict::Fatal(format!(
                "Zammad refused the API token ({reason}); it needs ticket.agent (and admin.user to create customers)"
            ))
        }
        ApiError::NotFound => {
            metrics::counter!(names::TICKET_REFUSALS, "cause" => "not_found").increment(1);
            Verdict::Refused(format!("call {call_id}: Zammad answered 404"))
        }
        ApiError::Refused { cause, reason } => {
            metrics::counter!(names::TICKET_REFUSALS, "cause" => cause).increment(1);
            Verdict::Refused(format!("call {call_id}: {reason}"))
        }
    }
}

#[async_trait::async_trait]
impl Sink for TicketsSink {
    fn name(&self) -> &'static str {
        "zammad-tickets"
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    /// A year of old missed calls as tickets helps nobody: a new in-process
    /// ticket bridge starts at the newest event.
    fn starts_at_head_when_new(&self) -> bool {
        true
    }

    fn wants(&self, event: &proto::CallEvent) -> bool {
        classify(event, self.include).is_some()
    }

    async fn preflight(&self) -> Verdict {
        match self.api.me().await {
            Ok(_) => Verdict::Delivered,
            Err(error) => verdict(error, "(token check)"),
        }
    }

    async fn deliver(&self, event: &proto::CallEvent) -> Verdict {
        let (Some(concern), Some(call)) = (classify(event, self.include), &event.call) else {
            return Verdict::Delivered;
        };
        let mut ledger = self.ledger.lock().await;
        if event.seq <= ledger.record.done_seq {
            return Verdict::Delivered;
        }
        let retried = ledger.record.pending == Some(event.seq);
        let result = match &concern {
            Concern::Missed { number } => {
                self.missed(&mut ledger, event, call, number, retried).await
            }
            Concern::Reached { number } => {
                self.reached(&mut ledger, event, call, number, retried)
                    .await
            }
        };
        match result {
            Ok(()) => {
                ledger.record.done_seq = event.seq;
                ledger.record.pending = None;
                match save(&ledger) {
                    Ok(()) => Verdict::Delivered,
                    Err(error) => verdict(error, &call.call_id),
                }
            }
            // The ticket vanished between the state check and the write:
            // the next attempt opens a new one.
            Err(ApiError::NotFound) => {
                let (Concern::Missed { number } | Concern::Reached { number }) = &concern;
                ledger.record.tickets.remove(number);
                Verdict::Transient {
                    reason: format!("call {}: the ticket was deleted in Zammad", call.call_id),
                    retry_after: Some(Duration::ZERO),
                }
            }
            Err(error) => verdict(error, &call.call_id),
        }
    }
}
