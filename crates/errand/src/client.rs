//! A client for a remote `errand serve`: what the CLI's client subcommands
//! use, and what a Rust application can use to talk to errand over HTTP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), errand::client::ClientError> {
//! use errand::client::Client;
//! use errand_api::SubmitRequest;
//!
//! let client = Client::new("http://127.0.0.1:5055", None)?;
//! let submitted = client
//!     .submit(&SubmitRequest {
//!         command: "demo.echo".into(),
//!         app: None,
//!         input: serde_json::json!({"hello": "world"}),
//!         context: None,
//!         tags: Vec::new(),
//!         options: None,
//!     })
//!     .await?;
//! let job = client.wait(&submitted.job_id.to_string(), None).await?;
//! println!("{}", job.status);
//! # Ok(()) }
//! ```

use std::time::Duration;

use errand_api::{
    CancelResponse, CommandLimit, CommandList, ErrorBody, EventList, JobList, LimitList,
    LimitRequest, ListQuery, QueueInfo, QueueList, ScheduleInfo, ScheduleList, ScheduleRequest,
    StatsResponse, SubmitRequest, SubmitResponse, WorkerList,
};
use errand_core::{Job, JobEvent, JobStatus};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// Longest single long-poll; `wait` asks again until its own deadline.
const LONG_POLL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the server is down, the address is wrong, or it timed out.
    #[error("cannot reach the errand server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error (errand's JSON error body).
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer is not what errand sends.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
}

impl ClientError {
    /// The store behind the server is down (503): as unreachable as the
    /// server itself, for a caller deciding whether to try again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            _ => false,
        }
    }
}

/// One event of a job's SSE stream.
#[derive(Clone, Debug)]
pub enum StreamEvent {
    /// The first event: the whole job as it is now.
    Snapshot(Box<Job>),
    /// Anything that happened after.
    Event(JobEvent),
    /// The last message: the job ended with this status.
    End(JobStatus),
}

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
}

impl Client {
    /// `base_url` is the server's root (`http://127.0.0.1:5055`); routes are
    /// reached under its `/api`.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: base_url.into(),
            reason,
        };
        let mut base = reqwest::Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("use http:// or https://".into()));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http URLs have paths")
            .pop_if_empty()
            .push("api")
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let request = request.build().map_err(|e| ClientError::Protocol {
            url: self.base.to_string(),
            reason: e.to_string(),
        })?;
        let url = request.url().to_string();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.to_string(),
                reason: error_chain(&e),
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => ClientError::Protocol {
                url,
                reason: format!("{status}: {}", text.chars().take(200).collect::<String>()),
            },
        })
    }

    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let url = response.url().to_string();
        response.json().await.map_err(|e| ClientError::Protocol {
            url,
            reason: error_chain(&e),
        })
    }

    pub async fn submit(&self, job: &SubmitRequest) -> Result<SubmitResponse, ClientError> {
        self.call(self.request(Method::POST, &["commands", "jobs"]).json(job))
            .await
    }

    /// The job now, or once it ends if that is within `wait` (long-poll).
    pub async fn job(&self, job_id: &str, wait: Option<Duration>) -> Result<Job, ClientError> {
        let mut request = self.request(Method::GET, &["commands", "jobs", job_id]);
        if let Some(wait) = wait {
            request = request
                .query(&[("wait", wait.as_secs_f64())])
                .timeout(wait + Duration::from_secs(30));
        }
        self.call(request).await
    }

    /// Long-polls until the job ends or `timeout` passes (forever when
    /// `None`); returns the job as it is then.
    pub async fn wait(&self, job_id: &str, timeout: Option<Duration>) -> Result<Job, ClientError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(tokio::time::Instant::now()),
                None => LONG_POLL,
            };
            let job = self.job(job_id, Some(left.min(LONG_POLL))).await?;
            let out_of_time = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if job.status.is_terminal() || out_of_time {
                return Ok(job);
            }
        }
    }

    pub async fn list(&self, query: &ListQuery) -> Result<JobList, ClientError> {
        self.call(
            self.request(Method::GET, &["commands", "jobs"])
                .query(query)
                .query(&query.label_pairs()),
        )
        .await
    }

    pub async fn cancel(&self, job_id: &str) -> Result<CancelResponse, ClientError> {
        self.call(self.request(Method::DELETE, &["commands", "jobs", job_id]))
            .await
    }

    /// Runs a failed or canceled job again; from its last checkpoint, or
    /// from scratch with `clear_checkpoint`.
    pub async fn retry(&self, job_id: &str, clear_checkpoint: bool) -> Result<Job, ClientError> {
        let mut request = self.request(Method::POST, &["commands", "jobs", job_id, "retry"]);
        if clear_checkpoint {
            request = request.query(&[("clear_checkpoint", true)]);
        }
        self.call(request).await
    }

    pub async fn events(&self, job_id: &str, after: i64) -> Result<EventList, ClientError> {
        let request = self
            .request(Method::GET, &["commands", "jobs", job_id, "events"])
            .query(&[("after", after)]);
        self.call(request).await
    }

    pub async fn stats(&self) -> Result<StatsResponse, ClientError> {
        self.call(self.request(Method::GET, &["commands", "stats"]))
            .await
    }

    pub async fn commands(&self) -> Result<CommandList, ClientError> {
        self.call(self.request(Method::GET, &["commands"])).await
    }

    pub async fn workers(&self) -> Result<WorkerList, ClientError> {
        self.call(self.request(Method::GET, &["workers"])).await
    }

    pub async fn queues(&self) -> Result<QueueList, ClientError> {
        self.call(self.request(Method::GET, &["queues"])).await
    }

    /// Pauses (`pause`) or resumes a queue for every worker.
    pub async fn pause_queue(&self, queue: &str, pause: bool) -> Result<QueueInfo, ClientError> {
        let action = if pause { "pause" } else { "resume" };
        self.call(self.request(Method::POST, &["queues", queue, action]))
            .await
    }

    pub async fn limits(&self) -> Result<LimitList, ClientError> {
        self.call(self.request(Method::GET, &["limits"])).await
    }

    /// Sets (or replaces) a command's limits.
    pub async fn set_limit(
        &self,
        command: &str,
        limit: &LimitRequest,
    ) -> Result<CommandLimit, ClientError> {
        self.call(self.request(Method::PUT, &["limits", command]).json(limit))
            .await
    }

    /// Lifts a command's limits.
    pub async fn delete_limit(&self, command: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &["limits", command]))
            .await
            .map(drop)
    }

    pub async fn schedules(&self) -> Result<ScheduleList, ClientError> {
        self.call(self.request(Method::GET, &["schedules"])).await
    }

    /// Creates the schedule `name`, or replaces its definition.
    pub async fn put_schedule(
        &self,
        name: &str,
        schedule: &ScheduleRequest,
    ) -> Result<ScheduleInfo, ClientError> {
        self.call(
            self.request(Method::PUT, &["schedules", name])
                .json(schedule),
        )
        .await
    }

    /// Deletes a schedule; the jobs it enqueued stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &["schedules", name]))
            .await
            .map(drop)
    }

    /// Pauses (`pause`) or resumes a schedule.
    pub async fn pause_schedule(
        &self,
        name: &str,
        pause: bool,
    ) -> Result<ScheduleInfo, ClientError> {
        let action = if pause { "pause" } else { "resume" };
        self.call(self.request(Method::POST, &["schedules", name, action]))
            .await
    }

    /// The job's live SSE stream, from the start or after `last_event_id`
    /// (which resumes without loss or duplicates). The stream ends with
    /// [`StreamEvent::End`] after the job's terminal event, or early when
    /// the connection drops; resumed after the end, it is empty.
    pub async fn stream(
        &self,
        job_id: &str,
        last_event_id: Option<i64>,
    ) -> Result<impl Stream<Item = Result<StreamEvent, ClientError>>, ClientError> {
        let mut request = self
            .request(Method::GET, &["commands", "jobs", job_id, "stream"])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = self.send(request).await?;
        let url = response.url().to_string();
        Ok(response.bytes_stream().eventsource().map(move |event| {
            let protocol = |reason: String| ClientError::Protocol {
                url: url.clone(),
                reason,
            };
            let event = event.map_err(|e| protocol(e.to_string()))?;
            if event.event == "end" {
                #[derive(serde::Deserialize)]
                struct Ended {
                    status: JobStatus,
                }
                serde_json::from_str::<Ended>(&event.data)
                    .map(|ended| StreamEvent::End(ended.status))
                    .map_err(|e| protocol(e.to_string()))
            } else if event.event == "status" && is_snapshot(&event.data) {
                serde_json::from_str(&event.data)
                    .map(|job| StreamEvent::Snapshot(Box::new(job)))
                    .map_err(|e| protocol(e.to_string()))
            } else {
                serde_json::from_str(&event.data)
                    .map(StreamEvent::Event)
                    .map_err(|e| protocol(e.to_string()))
            }
        }))
    }
}

/// The snapshot is a whole job (it has `input`); events have `seq`.
fn is_snapshot(data: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(data)
        .is_ok_and(|object| object.contains_key("input") && !object.contains_key("seq"))
}

/// An error with its causes, which is where reqwest says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_live_under_api_whatever_the_base_path() {
        let client = Client::new("http://h:1", None).unwrap();
        assert_eq!(
            client.url(&["commands", "jobs"]).as_str(),
            "http://h:1/api/commands/jobs"
        );
        let proxied = Client::new("https://h/errand", None).unwrap();
        assert_eq!(
            proxied.url(&["workers"]).as_str(),
            "https://h/errand/api/workers"
        );
    }

    #[test]
    fn a_job_id_is_one_path_segment() {
        let client = Client::new("http://h:1/", None).unwrap();
        assert_eq!(
            client.url(&["commands", "jobs", "a/../b"]).as_str(),
            "http://h:1/api/commands/jobs/a%2F..%2Fb"
        );
    }

    #[test]
    fn only_http_urls() {
        assert!(matches!(
            Client::new("ftp://h", None),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            Client::new("nonsense", None),
            Err(ClientError::BadUrl { .. })
        ));
    }
}
