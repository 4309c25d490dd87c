//! `cake git-credential <get|store|erase>`: git's credential helper inside a session's
//! runtime. git runs it (`credential.helper`, set by the data-plane init container or the local
//! runtime) with the request on stdin, `key=value` lines ended by a blank line; for `get` it
//! asks the control plane's broker (`POST $CAKE_BROKER_URL/api/broker/git-credential` with
//! `Authorization: Bearer $CAKE_BROKER_TOKEN`) and prints `username=` and `password=` lines.
//!
//! The broker owns the credentials, so `store` and `erase` change nothing. When the session has
//! no broker token, no credential serves the host, or the broker refuses, `get` prints nothing
//! (git then tries its next helper, or fails without prompting) and says why on stderr.

use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::{Value, json};

/// How long one broker call may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The most input lines read (git sends a handful).
const MAX_LINES: usize = 64;

/// What git asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `protocol=`.
    pub protocol: Option<String>,
    /// `host=`.
    pub host: Option<String>,
    /// `path=`.
    pub path: Option<String>,
}

/// Reads git's request: `key=value` lines up to a blank line or the end of input; unknown
/// keys (`wwwauth[]`, `capability[]`, …) are ignored.
pub fn parse_request(input: impl BufRead) -> std::io::Result<Request> {
    let mut request = Request::default();
    for line in input.lines().take(MAX_LINES) {
        let line = line?;
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = Some(value.to_owned());
        match key {
            "protocol" => request.protocol = value,
            "host" => request.host = value,
            "path" => request.path = value,
            _ => {}
        }
    }
    Ok(request)
}

/// Where the broker is and the session's token, from the environment.
pub struct Broker {
    /// `CAKE_BROKER_URL`.
    pub url: String,
    /// `CAKE_BROKER_TOKEN`.
    pub token: secrecy::SecretString,
}

impl Broker {
    /// From `CAKE_BROKER_URL` and `CAKE_BROKER_TOKEN`, or why not.
    pub fn from_env() -> Result<Self, &'static str> {
        let token = std::env::var("CAKE_BROKER_TOKEN").ok().filter(|t| !t.is_empty());
        let url = std::env::var("CAKE_BROKER_URL").ok().filter(|u| !u.is_empty());
        match (url, token) {
            (_, None) => Err("this session was granted no credentials (CAKE_BROKER_TOKEN is not set)"),
            (None, Some(_)) => Err("CAKE_BROKER_URL is not set"),
            (Some(url), Some(token)) => {
                Ok(Self { url: url.trim_end_matches('/').to_owned(), token: secrecy::SecretString::from(token) })
            }
        }
    }
}

/// The outcome of `get`.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Print these.
    Credential {
        /// User name.
        username: String,
        /// Password (the token).
        password: String,
    },
    /// Nothing to print, and why (for stderr).
    Nothing(String),
}

/// Asks the broker.
pub async fn get(broker: &Broker, request: &Request) -> Result<Answer, String> {
    use secrecy::ExposeSecret;
    let (Some(protocol), Some(host)) = (&request.protocol, &request.host) else {
        return Ok(Answer::Nothing("git sent no protocol or host".into()));
    };
    let mut body = json!({"protocol": protocol, "host": host});
    if let Some(path) = &request.path {
        body["path"] = json!(path);
    }
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| e.to_string())?;
    let response = client
        .post(format!("{}/api/broker/git-credential", broker.url))
        .bearer_auth(broker.token.expose_secret())
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("cannot reach the control plane at {}: {e}", broker.url))?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    let message = value.pointer("/error/message").and_then(Value::as_str).unwrap_or("").to_owned();
    match status.as_u16() {
        200 => {
            let field = |name: &str| {
                value
                    .get(name)
                    .and_then(Value::as_str)
                    // A value must stay on its line of git's protocol.
                    .filter(|v| !v.is_empty() && !v.contains(['\n', '\r', '\0']))
                    .map(str::to_owned)
            };
            match (field("username"), field("password")) {
                (Some(username), Some(password)) => Ok(Answer::Credential { username, password }),
                _ => Err("the control plane's answer is not a credential".into()),
            }
        }
        404 => Ok(Answer::Nothing(format!("no credential granted to this session serves {protocol}://{host}"))),
        401 => Ok(Answer::Nothing(format!(
            "the control plane refused this session's broker token (has the session ended?) {message}"
        ))),
        other => Err(format!("the control plane answered {other}: {message}")),
    }
}

/// Runs the subcommand: `action` is what git passes (`get`, `store`, `erase`).
pub async fn run(action: &str) -> std::process::ExitCode {
    use std::process::ExitCode;
    let stdin = std::io::stdin();
    let request = match parse_request(stdin.lock()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cake git-credential: cannot read git's request: {e}");
            return ExitCode::FAILURE;
        }
    };
    match action {
        "get" => {}
        // The broker owns the credentials: nothing to store or erase here.
        "store" | "erase" => return ExitCode::SUCCESS,
        other => {
            eprintln!("cake git-credential: unknown action {other:?} (git calls get, store or erase)");
            return ExitCode::from(2);
        }
    }
    let broker = match Broker::from_env() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("cake git-credential: {why}");
            return ExitCode::SUCCESS;
        }
    };
    match get(&broker, &request).await {
        Ok(Answer::Credential { username, password }) => {
            let mut out = std::io::stdout().lock();
            let written = writeln!(out, "username={username}").and_then(|_| writeln!(out, "password={password}"));
            if written.and_then(|_| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(Answer::Nothing(why)) => {
            eprintln!("cake git-credential: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cake git-credential: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gits_request_up_to_the_blank_line() {
        let input = "protocol=https\nhost=github.com\npath=org/repo.git\nwwwauth[]=Basic\n\nhost=ignored\n";
        let r = parse_request(input.as_bytes()).unwrap();
        assert_eq!(
            r,
            Request {
                protocol: Some("https".into()),
                host: Some("github.com".into()),
                path: Some("org/repo.git".into())
            }
        );
        assert_eq!(parse_request("".as_bytes()).unwrap(), Request::default());
        assert_eq!(parse_request("garbage\nhost=h".as_bytes()).unwrap().host.as_deref(), Some("h"));
    }
}
