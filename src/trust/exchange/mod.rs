//! The exchange: verify the CI token, choose a policy, mint, record. No HTTP in here.
//!
//! Each step returns a typed result, and a refused exchange is one [`Refusal`] value.
//! How a request ended is [`Concluded`]: its answer, its final record and the record's
//! place in the trail. The audit record is built in [`record`], written by one store
//! step, and the decision log line and the metrics are derived from it in
//! [`Exchanger::exchange`]; `http::error` derives the HTTP answer from the refusal.
//!
//! Invariants kept here:
//! - a token is never returned unless its audit record has been written, in the same
//!   atomic store step that uses the CI token up ([`Settle::Use`], [`Settle::Consume`]);
//! - a remote target is called only after the CI token is reserved and a `pending`
//!   record written ([`Store::begin`]), so two requests with one CI token never both
//!   reach it, even on two replicas, and every call to it is on record (a cancelled
//!   request is completed as `cancelled`);
//! - with `replay = "reject"`, only an exchange that returns a token uses the CI token
//!   up: a refusal or failure leaves it unused, or releases its reservation;
//! - policy content reaches only callers bound for the target (see [`Refusal`]).

mod decide;
pub mod explain;
mod in_flight;
mod record;
mod refusal;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;

use crate::config::{ReplayMode, TargetConfig};
use crate::trust::audit::{AuditRecord, Outcome, Reason, log_decision};
use crate::trust::mint::{Grant, MintedToken, Minter};
use crate::trust::policy::PolicySet;
use crate::trust::store::{
    Abandon, Begin, Begun, Finish, Finished, ReplayKey, ReservationId, Reserve, Seq, Settle, Store,
};
use crate::trust::verify::Verifier;
use in_flight::{InFlight, RecentlyUsed};
use record::{Ending, Facts};
pub use refusal::{Denial, ExchangeError, Refusal, generic_denial};

pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How long a replay record outlives the CI token's `exp` beyond the issuer's leeway.
pub const REPLAY_MARGIN: Duration = Duration::from_secs(60);

/// How long a remote exchange's reservation outlives the target's time budget: a
/// replica that dies mid-call blocks its CI token no longer than budget + this.
pub const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// A parsed, well-formed exchange request (rows 2–5 of the error table already passed).
#[derive(Debug, Clone)]
pub struct ExchangeRequest {
    pub request_id: String,
    /// The CI token; `Debug` redacts it.
    pub subject_token: SecretString,
    pub audience: String,
    /// Requested scopes, deduplicated in request order; `None` when absent.
    pub scope: Option<Vec<String>>,
    pub policy: Option<String>,
    pub requested_token_type: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A successful exchange.
#[derive(Debug)]
pub struct Issued {
    /// The minted token; `Debug` redacts it.
    pub access_token: SecretString,
    pub issued_token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    pub target: String,
    pub policy: String,
}

/// Sees how every answered exchange ended (metrics implement it).
pub trait ExchangeObserver: Send + Sync + 'static {
    fn concluded(&self, outcome: Outcome, reason: Reason, seconds: f64);
    /// An audit-mode policy would have allowed this exchange (`would_allow`).
    fn would_allow(&self, _policy: &str) {}
}

/// A target as the exchange needs it.
pub struct Target {
    pub config: TargetConfig,
    pub minter: Arc<dyn Minter>,
}

/// How one request ended.
struct Concluded {
    result: Result<Issued, Refusal>,
    /// The request's final record, as written (or as it would have been).
    record: Arc<AuditRecord>,
    /// Its place in the trail; `None` when the store could not write it.
    seq: Option<Seq>,
}

/// Everything an exchange needs, shared by all requests.
pub struct Exchanger {
    pub verifier: Verifier,
    /// Swapped whole by the policy reloader.
    pub policies: Arc<ArcSwap<PolicySet>>,
    pub targets: BTreeMap<String, Target>,
    /// Audience URL → target name, for targets with `match_audience_url`.
    audience_index: HashMap<String, String>,
    pub store: Arc<dyn Store>,
    observer: Arc<dyn ExchangeObserver>,
    in_flight: InFlight,
    recently_used: RecentlyUsed,
}

impl Exchanger {
    pub fn new(
        verifier: Verifier,
        policies: Arc<ArcSwap<PolicySet>>,
        targets: BTreeMap<String, Target>,
        store: Arc<dyn Store>,
        observer: Arc<dyn ExchangeObserver>,
    ) -> Self {
        let audience_index = targets
            .values()
            .filter(|target| target.config.match_audience_url)
            .map(|target| (target.config.audience.clone(), target.config.name.clone()))
            .collect();
        Self {
            verifier,
            policies,
            targets,
            audience_index,
            store,
            observer,
            in_flight: InFlight::default(),
            recently_used: RecentlyUsed::default(),
        }
    }

    /// Runs one exchange. Before this returns, its records are written, its decision is
    /// logged and it is counted. `now` is injected for tests.
    pub async fn exchange(
        &self,
        request: &ExchangeRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, Refusal> {
        let started = Instant::now();
        let concluded = self.run(request, now).await;
        log_decision(&concluded.record, concluded.seq.map(|seq| seq.0));
        self.observer.concluded(
            concluded.record.outcome,
            concluded.record.reason,
            started.elapsed().as_secs_f64(),
        );
        concluded.result
    }

    async fn run(&self, request: &ExchangeRequest, now: OffsetDateTime) -> Concluded {
        let mut facts = Facts {
            request,
            now,
            workload: None,
            evaluation: None,
        };
        let verified = match self
            .verifier
            .verify(request.subject_token.expose_secret(), now.unix_timestamp())
            .await
        {
            Ok(verified) => verified,
            Err(err) => {
                return self
                    .refuse(&facts, Refusal::of_token(&err), Settle::Nothing)
                    .await;
            }
        };
        facts.workload = Some((&verified.claims, verified.issuer.kind));
        let replay_key =
            (verified.issuer.replay == ReplayMode::Reject).then_some(&verified.replay_key);
        // Held until this function returns, cancellation included.
        let _in_flight = match replay_key.map(|key| self.in_flight.enter(key)) {
            Some(None) => {
                return self
                    .refuse(&facts, Refusal::in_use(), Settle::Nothing)
                    .await;
            }
            Some(Some(guard)) => Some(guard),
            None => None,
        };
        if replay_key.is_some_and(|key| self.recently_used.contains(key)) {
            return self
                .refuse(&facts, Refusal::replayed(), Settle::Nothing)
                .await;
        }
        let unused = replay_key.map_or(Settle::Nothing, Settle::Unused);

        let (evaluation, decided) = self.decide(request, &verified);
        facts.evaluation = Some(evaluation);
        let decided = match decided {
            Ok(decided) => decided,
            Err(refusal) => return self.refuse(&facts, refusal, unused).await,
        };
        let grant = Grant {
            request_id: &request.request_id,
            claims: &verified.claims,
            ci_issuer_url: &verified.issuer.issuer,
            issuer_kind: verified.issuer.kind,
            policy: decided.policy.name(),
            scopes: &decided.scopes,
            ttl: decided.policy.ttl(),
        };
        let keep_until = replay_keep_until(verified.expires_at, verified.leeway);
        let use_up = replay_key.map_or(Settle::Nothing, |key| Settle::Use { key, keep_until });
        let minter = &decided.target.minter;
        let target = decided.target.config.name.as_str();

        if let Some(reused) = minter.reusable(&grant, now) {
            return self.hand_out(&facts, &grant, target, reused, use_up).await;
        }
        match minter.calls_out() {
            None => match minter.mint(&grant, now).await {
                Ok(minted) => self.hand_out(&facts, &grant, target, minted, use_up).await,
                Err(err) => {
                    self.refuse(&facts, Refusal::of_mint(target, err), unused)
                        .await
                }
            },
            Some(budget) => {
                let reserve = replay_key.map(|key| (key, keep_until));
                self.call_out(&facts, &grant, target, minter.as_ref(), reserve, budget)
                    .await
            }
        }
    }

    /// A remote target: reserve the CI token and write the pending record, call the
    /// target, then hand out or release.
    async fn call_out(
        &self,
        facts: &Facts<'_>,
        grant: &Grant<'_>,
        target: &str,
        minter: &dyn Minter,
        reserve: Option<(&ReplayKey, OffsetDateTime)>,
        budget: Duration,
    ) -> Concluded {
        let holder = ReservationId::new();
        let pending = facts.record(Ending::Pending);
        // Armed before `begin`: a request dropped while `begin` runs still completes
        // whatever the store committed (and adds nothing if it committed nothing).
        let mut abandon = AbandonOnDrop {
            store: Some(self.store.clone()),
            request_id: facts.request.request_id.clone(),
            record: facts.record(Ending::Refused(&Refusal::cancelled())),
            reservation: reserve.map(|(key, _)| (key.clone(), holder.clone())),
        };
        let begun = self
            .store
            .begin(
                Begin {
                    record: pending.clone(),
                    // From the clock now, not the request's start: verification may have
                    // waited on the issuer's keys, and the lease must cover the whole call.
                    reserve: reserve.map(|(key, keep_until)| Reserve {
                        key,
                        holder: &holder,
                        lease_until: OffsetDateTime::now_utc().max(facts.now)
                            + budget
                            + LEASE_MARGIN,
                        keep_until,
                    }),
                },
                facts.now,
            )
            .await;
        let refused = match begun {
            Ok(Begun::Reserved(seq)) => {
                log_decision(&pending, Some(seq.0));
                None
            }
            Ok(Begun::AlreadyUsed) => Some(Refusal::replayed()),
            Ok(Begun::InUse) => Some(Refusal::in_use()),
            Err(err) => {
                tracing::error!(request_id = %facts.request.request_id, error = %err, "pending audit record could not be written; the target is not called");
                Some(Refusal::audit_unavailable(&err))
            }
        };
        if let Some(refusal) = refused {
            abandon.disarm();
            return self.refuse(facts, refusal, Settle::Nothing).await;
        }

        let concluded = match minter.mint(grant, facts.now).await {
            Ok(minted) => {
                // The tenant's token exists now: a request dropped from here on is
                // completed with its hash, so the tenant's logs can still be matched.
                abandon.record = facts.record(Ending::Refused(
                    &Refusal::cancelled().withholding(&minted.sha256),
                ));
                let settle = match reserve {
                    Some((key, _)) => Settle::Consume {
                        key,
                        holder: &holder,
                    },
                    None => Settle::Nothing,
                };
                self.hand_out(facts, grant, target, minted, settle).await
            }
            Err(err) => {
                let settle = match reserve {
                    Some((key, _)) => Settle::Release {
                        key,
                        holder: &holder,
                    },
                    None => Settle::Nothing,
                };
                // Decided: a request dropped from here on is completed with this refusal
                // (which carries the hash of any token the target issued and we withheld).
                let refusal = Refusal::of_mint(target, err);
                abandon.record = facts.record(Ending::Refused(&refusal));
                self.refuse(facts, refusal, settle).await
            }
        };
        if concluded.seq.is_some() {
            abandon.disarm();
        } else {
            // The final step failed: the guard retries in the background, completing the
            // pending record with what happened and releasing the reservation.
            abandon.record = concluded.record.clone();
        }
        concluded
    }

    /// Writes the record of a token handed out, settling the CI token with it; withholds
    /// the token when that cannot be done.
    async fn hand_out(
        &self,
        facts: &Facts<'_>,
        grant: &Grant<'_>,
        target: &str,
        mut minted: MintedToken,
        settle: Settle<'_>,
    ) -> Concluded {
        let record = facts.record(Ending::Issued(&minted));
        let finished = self
            .store
            .finish(
                Finish {
                    record: record.clone(),
                    settle: settle.clone(),
                },
                facts.now,
            )
            .await;
        let withheld = match finished {
            Ok(Finished::Recorded(seq)) => {
                if let Settle::Use { key, .. } | Settle::Consume { key, .. } = settle {
                    self.recently_used.remember(key);
                }
                if let Some(work) = minted.after_hand_out.take() {
                    work.run();
                }
                // `...:jwt` is honoured only when the token is one (a remote target's
                // may be opaque).
                let issued_token_type = match facts.request.requested_token_type.as_deref() {
                    Some(TOKEN_TYPE_JWT) if minted.is_jwt => TOKEN_TYPE_JWT,
                    _ => TOKEN_TYPE_ACCESS_TOKEN,
                };
                return Concluded {
                    result: Ok(Issued {
                        access_token: minted.token,
                        issued_token_type,
                        expires_in: minted.expires_in,
                        scope: minted.scope,
                        target: target.to_owned(),
                        policy: grant.policy.to_owned(),
                    }),
                    record,
                    seq: Some(seq),
                };
            }
            Ok(Finished::AlreadyUsed) => (Refusal::replayed(), Settle::Nothing),
            Ok(Finished::InUse) => (Refusal::in_use(), Settle::Nothing),
            Ok(Finished::ReservationLost) => (Refusal::reservation_lost(), Settle::Nothing),
            Err(err) => {
                tracing::error!(request_id = %facts.request.request_id, error = %err, "the token's record could not be written; token withheld");
                // Nothing happened: the CI token is not used. Release the reservation, if
                // any, with the record of the withheld token.
                let release = match settle {
                    Settle::Consume { key, holder } => Settle::Release { key, holder },
                    _ => Settle::Nothing,
                };
                (Refusal::store_unavailable(&err), release)
            }
        };
        let (refusal, settle) = withheld;
        self.refuse(facts, refusal.withholding(&minted.sha256), settle)
            .await
    }

    /// Writes the record of a refusal, settling the CI token as told. A refusal of a CI
    /// token that was used (or is held) becomes that refusal, as the contract ranks it
    /// first.
    async fn refuse(
        &self,
        facts: &Facts<'_>,
        mut refusal: Refusal,
        mut settle: Settle<'_>,
    ) -> Concluded {
        loop {
            let record = facts.record(Ending::Refused(&refusal));
            let finished = self
                .store
                .finish(
                    Finish {
                        record: record.clone(),
                        settle,
                    },
                    facts.now,
                )
                .await;
            match finished {
                Ok(Finished::Recorded(seq)) => {
                    return Concluded {
                        result: Err(refusal),
                        record,
                        seq: Some(seq),
                    };
                }
                Ok(Finished::AlreadyUsed) => refusal = Refusal::replayed(),
                Ok(Finished::InUse) => refusal = Refusal::in_use(),
                Ok(Finished::ReservationLost) => {}
                Err(err) => {
                    tracing::error!(request_id = %facts.request.request_id, error = %err, "audit record could not be written");
                    // A 503 stays what it is; anything else becomes one: a refusal that
                    // cannot be recorded is not answered as if it were.
                    if !matches!(refusal.answer, ExchangeError::Unavailable { .. }) {
                        let mut unrecorded = Refusal::audit_unavailable(&err);
                        unrecorded.detail = format!(
                            "{}; the refusal not recorded: {}: {}",
                            unrecorded.detail, refusal.reason, refusal.detail
                        );
                        refusal = unrecorded;
                    }
                    return Concluded {
                        record: facts.record(Ending::Refused(&refusal)),
                        result: Err(refusal),
                        seq: None,
                    };
                }
            }
            settle = Settle::Nothing;
        }
    }

    fn resolve_target(&self, audience: &str) -> Option<&Target> {
        self.targets.get(audience).or_else(|| {
            self.audience_index
                .get(audience)
                .and_then(|name| self.targets.get(name))
        })
    }
}

/// Armed while a remote target is called. Dropped armed (the caller went away, or the
/// final step could not be written), it completes the request in the background: the
/// store releases the reservation and appends `record` unless the final record made it
/// first; what is written is logged.
struct AbandonOnDrop {
    store: Option<Arc<dyn Store>>,
    request_id: String,
    record: Arc<AuditRecord>,
    reservation: Option<(ReplayKey, ReservationId)>,
}

impl AbandonOnDrop {
    fn disarm(&mut self) {
        self.store = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let request_id = std::mem::take(&mut self.request_id);
        let record = self.record.clone();
        let reservation = self.reservation.take();
        runtime.spawn(async move {
            let step = Abandon {
                request_id: &request_id,
                record: record.clone(),
                reservation: reservation.as_ref().map(|(key, holder)| (key, holder)),
            };
            match store.abandon(step, OffsetDateTime::now_utc()).await {
                Ok(Some(seq)) => log_decision(&record, Some(seq.0)),
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(%request_id, error = %err, "the abandoned request's record could not be written; its reservation lapses with its lease");
                }
            }
        });
    }
}

/// When a replay record may be forgotten: the CI token's `exp` + leeway + [`REPLAY_MARGIN`].
pub fn replay_keep_until(exp: i64, leeway: Duration) -> OffsetDateTime {
    let keep = exp
        .saturating_add(i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX / 4))
        .saturating_add(i64::try_from(REPLAY_MARGIN.as_secs()).unwrap_or(60));
    OffsetDateTime::from_unix_timestamp(keep)
        .unwrap_or(OffsetDateTime::now_utc() + time::Duration::days(1))
}
