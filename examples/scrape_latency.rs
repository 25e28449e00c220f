//! One scraper's latency, measured per request: the bench's client for "scrape p99 with
//! collections in flight" (`scripts/bench.sh docker`).
//!
//! It keeps one HTTP/1.1 connection, as Prometheus keeps one per target (or CONNECTIONS, one
//! thread each, for a saturating load), and on each sends `GET PATH` back to back for the given
//! seconds. Each request is timed from just before its write to the
//! last byte of its answer, on the monotonic clock, and every sample is kept, so the percentiles
//! are exact. It prints one line of `key=value` fields (microseconds), including `busy_us`, the
//! sum of all samples. On one connection the samples are disjoint stretches of the run, so they
//! cannot add up to more than it; wrk 4.1's do while dockerd loads this machine (its mean ×
//! requests is twice its run and more), which is why the bench does not take this figure from
//! wrk.
//!
//!     scrape_latency 127.0.0.1:9500 /metrics 10        # one scraper
//!     scrape_latency 127.0.0.1:9500 /metrics 10 16     # sixteen connections
//!
//! Exit 1 with a message on a refused connection, a non-2xx answer or a malformed one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Longest answer accepted (the exposition is tens of KiB); a bigger one is an error.
const MAX_ANSWER: usize = 64 << 20;

/// Longest wait for any one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, path, secs, conns) = match args.as_slice() {
        [a, p, s] => (a, p, s, "1"),
        [a, p, s, c] => (a, p, s, c.as_str()),
        _ => {
            eprintln!("usage: scrape_latency HOST:PORT PATH SECONDS [CONNECTIONS]");
            return ExitCode::from(2);
        }
    };
    let conns = match conns.parse::<usize>() {
        Ok(n @ 1..=256) => n,
        _ => {
            eprintln!("scrape_latency: CONNECTIONS must be 1 to 256, not {conns:?}");
            return ExitCode::from(2);
        }
    };
    let Ok(secs) = secs.parse::<f64>() else {
        eprintln!("scrape_latency: SECONDS must be a number, not {secs:?}");
        return ExitCode::from(2);
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        eprintln!("scrape_latency: SECONDS must be in (0, 3600], not {secs}");
        return ExitCode::from(2);
    }
    match run(addr, path, Duration::from_secs_f64(secs), conns) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scrape_latency: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Scrapes for `length` on `conns` connections at once and returns the summary line.
fn run(addr: &str, path: &str, length: Duration, conns: usize) -> Result<String, String> {
    let start = Instant::now();
    let results: Vec<Result<(Vec<u64>, usize), String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..conns)
            .map(|_| s.spawn(|| scrape(addr, path, length)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a scraping thread panicked".into()))
            })
            .collect()
    });
    let took = start.elapsed();
    let (mut samples, mut bytes) = (Vec::new(), 0);
    for r in results {
        let (s, b) = r?;
        samples.extend(s);
        bytes += b;
    }
    Ok(summary(&mut samples, took, bytes, conns))
}

/// One connection's scrapes for `length`: every sample in nanoseconds, and the bytes read.
fn scrape(addr: &str, path: &str, length: Duration) -> Result<(Vec<u64>, usize), String> {
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: scrape_latency\r\n\r\n");
    let mut buf = Vec::with_capacity(1 << 16);
    let mut samples: Vec<u64> = Vec::with_capacity(1 << 20);
    let mut bytes = 0usize;
    let start = Instant::now();
    while start.elapsed() < length {
        let t0 = Instant::now();
        conn.write_all(request.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        bytes += read_answer(&mut conn, &mut buf)?;
        samples.push(t0.elapsed().as_nanos().try_into().unwrap_or(u64::MAX));
    }
    Ok((samples, bytes))
}

/// Reads one whole answer (Content-Length or chunked) and returns its length in bytes.
fn read_answer(conn: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, String> {
    buf.clear();
    let head_end = loop {
        fill(conn, buf)?;
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "answer head is not UTF-8")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if !status.starts_with('2') {
        return Err(format!("answer status {status:?}, not 2xx"));
    }
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        while buf.len() < head_end + len {
            fill(conn, buf)?;
        }
        return Ok(head_end + len);
    }
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // The answer ends with the zero-length chunk and the blank line after it.
        while find(&buf[head_end - 2..], b"\r\n0\r\n\r\n").is_none() {
            fill(conn, buf)?;
        }
        return Ok(buf.len());
    }
    Err("answer has neither Content-Length nor chunked encoding".into())
}

/// Appends what the connection has to `buf`, refusing an answer past [`MAX_ANSWER`].
fn fill(conn: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 64 << 10];
    let n = conn.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    if buf.len() + n > MAX_ANSWER {
        return Err(format!("answer longer than {MAX_ANSWER} bytes"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The summary line: count, run length, sum of samples, percentiles and max, in microseconds.
fn summary(samples: &mut [u64], took: Duration, bytes: usize, conns: usize) -> String {
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let pct = |p: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        // The nearest-rank percentile: the smallest sample with at least p of them at or below
        // (less a hair, so that 99.9 % of 1,000 is rank 999 despite the float's rounding).
        let rank = ((p / 100.0) * samples.len() as f64 - 1e-9).ceil().max(1.0) as usize;
        us(samples[rank.min(samples.len()) - 1])
    };
    let busy: u64 = samples.iter().sum();
    format!(
        "SCRAPE connections={conns} requests={} duration_us={} busy_us={:.0} bytes={} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
        samples.len(),
        took.as_micros(),
        us(busy),
        bytes,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        samples.last().map_or(0.0, |&m| us(m)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn answers_are_read_to_their_end_by_length_or_chunks_and_bad_ones_refused() {
        let mut buf = Vec::new();
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n";
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".len();
        assert_eq!(
            read_answer(&mut Cursor::new(&two[..]), &mut buf),
            Ok(head + 5)
        );
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            read_answer(&mut Cursor::new(&chunked[..]), &mut buf),
            Ok(chunked.len())
        );
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(
            read_answer(&mut Cursor::new(&missing[..]), &mut buf).is_err_and(|e| e.contains("404"))
        );
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel";
        assert!(
            read_answer(&mut Cursor::new(&cut[..]), &mut buf).is_err_and(|e| e.contains("closed"))
        );
    }

    #[test]
    fn the_summary_takes_nearest_rank_percentiles_and_adds_every_sample() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let line = summary(&mut samples, Duration::from_secs(1), 7, 2);
        for field in [
            "connections=2",
            "requests=1000",
            "busy_us=500500",
            "p50_us=500.0",
            "p99_us=990.0",
            "p999_us=999.0",
            "max_us=1000.0",
        ] {
            assert!(line.split(' ').any(|f| f == field), "{field} not in {line}");
        }
        assert!(summary(&mut [], Duration::from_secs(1), 0, 1).contains("p99_us=0.0"));
    }
}
