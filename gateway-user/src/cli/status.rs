//! `tollgate status`: asks a running agent (its admin server) what it enforces.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Fetches `/status` from the agent at `admin`; prints it; exit 0, or 2 when no agent answers.
pub fn status(admin: SocketAddr, json: bool) -> anyhow::Result<i32> {
    let body = match fetch(admin) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("no agent answers on {admin} (--admin): {e}");
            return Ok(2);
        }
    };
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("the agent's /status is not JSON: {e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let rev = |r: &serde_json::Value| {
        if r.is_null() {
            "none".to_owned()
        } else {
            format!(
                "{} from {} (at {} Unix)",
                r["id"].as_str().unwrap_or("?"),
                r["source"].as_str().unwrap_or("?"),
                r["at_unix"]
            )
        }
    };
    // What the agent reports can quote the policy (names, values): escaped for the terminal.
    let safe = |s: &str| super::terminal_safe(s).into_owned();
    println!("applied:    {}", safe(&rev(&v["applied"])));
    println!("attempted:  {}", safe(&rev(&v["attempted"])));
    println!(
        "last error: {}",
        safe(v["last_error"].as_str().unwrap_or("none"))
    );
    if let Some(failures) = v["consecutive_failures"].as_u64().filter(|n| *n > 0) {
        println!("source:     unreadable {failures} time(s) in a row; retrying with backoff");
    }
    if let Some(next) = v["next_attempt_in_seconds"].as_f64() {
        println!("next pass:  in {next:.1} s");
    }
    for i in v["interfaces"].as_array().into_iter().flatten() {
        println!(
            "interface:  {} ({})",
            i["name"].as_str().unwrap_or("?"),
            i["mode"].as_str().unwrap_or("?")
        );
    }
    for f in v["failsafe"].as_array().into_iter().flatten() {
        println!(
            "failsafe:   tcp {}:{} ({}): its TCP replies pass whatever the L4 policy says",
            f["addr"].as_str().unwrap_or("?"),
            f["port"],
            f["origin"].as_str().unwrap_or("?")
        );
    }
    println!(
        "rules: {}, source entries: {}, port entries: {}",
        v["rules"], v["source_entries"], v["port_entries"]
    );
    if let Some(n) = v["bans_total"].as_u64() {
        println!("bans:       {n} in force (banOnAbuse; `tollgate bans` lists them)");
    }
    Ok(0)
}

fn fetch(admin: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_owned(),
        ));
    }
    Ok(body.to_owned())
}
