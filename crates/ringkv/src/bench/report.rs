//! Latency recording (one HDR histogram per operation kind, per worker, merged at the end)
//! and the report: throughput and p50 / p90 / p99 / p99.9 / max per operation.

use super::target::Response;
use super::workload::Op;
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::Duration;

/// Slowest latency a histogram tracks (longer ones are clamped to it).
const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// Histograms and error counts of some workers.
pub struct Recorder {
    latencies: Vec<Histogram<u64>>,
    errors: [u64; Op::ALL.len()],
    first_error: Option<String>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).expect("valid bounds");
        Self {
            latencies: Op::ALL.iter().map(|_| histogram()).collect(),
            errors: [0; Op::ALL.len()],
            first_error: None,
        }
    }

    /// Records one finished operation.
    pub fn record(&mut self, op: Op, elapsed: Duration, response: &Response) {
        if let Response::Error(message) = response {
            self.errors[op.index()] += 1;
            self.first_error.get_or_insert_with(|| message.clone());
            return;
        }
        let micros = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_MICROS);
        self.latencies[op.index()].saturating_record(micros);
    }

    /// Adds another recorder's figures.
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            mine.add(theirs).expect("histograms share bounds");
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// The phase's report.
    pub fn report(
        &self,
        workload: &str,
        elapsed: Duration,
        connections: usize,
        pipeline: usize,
    ) -> PhaseReport {
        let rows = Op::ALL
            .iter()
            .filter(|op| self.latencies[op.index()].len() + self.errors[op.index()] > 0)
            .map(|op| {
                let h = &self.latencies[op.index()];
                OpRow {
                    op: op.name(),
                    count: h.len(),
                    errors: self.errors[op.index()],
                    ops_per_second: (h.len() + self.errors[op.index()]) as f64
                        / elapsed.as_secs_f64(),
                    percentiles_micros: [50.0, 90.0, 99.0, 99.9]
                        .map(|q| h.value_at_quantile(q / 100.0)),
                    max_micros: h.max(),
                }
            })
            .collect();
        PhaseReport {
            workload: workload.to_owned(),
            elapsed,
            connections,
            pipeline,
            rows,
            first_error: self.first_error.clone(),
        }
    }
}

/// Figures of one operation kind.
pub struct OpRow {
    op: &'static str,
    count: u64,
    errors: u64,
    ops_per_second: f64,
    /// p50, p90, p99, p99.9.
    percentiles_micros: [u64; 4],
    max_micros: u64,
}

/// The result of one phase.
pub struct PhaseReport {
    workload: String,
    elapsed: Duration,
    connections: usize,
    pipeline: usize,
    rows: Vec<OpRow>,
    first_error: Option<String>,
}

impl PhaseReport {
    /// Total operations per second across kinds.
    pub fn ops_per_second(&self) -> f64 {
        self.rows.iter().map(|row| row.ops_per_second).sum()
    }

    /// Prints the report as a table or one JSON line. A closed stdout (`| head`) is not an
    /// error worth a panic, so write errors are ignored.
    pub fn print(&self, target: &str, phase: &str, json: bool) {
        let _ = self.write(&mut std::io::stdout().lock(), target, phase, json);
    }

    fn write(
        &self,
        out: &mut impl std::io::Write,
        target: &str,
        phase: &str,
        json: bool,
    ) -> std::io::Result<()> {
        if json {
            let operations: serde_json::Map<String, serde_json::Value> = self
                .rows
                .iter()
                .map(|row| {
                    let [p50, p90, p99, p999] = row.percentiles_micros;
                    let figures = json!({
                        "count": row.count, "errors": row.errors, "ops_per_second": row.ops_per_second,
                        "p50_us": p50, "p90_us": p90, "p99_us": p99, "p999_us": p999, "max_us": row.max_micros,
                    });
                    (row.op.to_owned(), figures)
                })
                .collect();
            let line = json!({
                "target": target, "phase": phase, "workload": self.workload,
                "connections": self.connections, "pipeline": self.pipeline,
                "seconds": self.elapsed.as_secs_f64(), "ops_per_second": self.ops_per_second(),
                "operations": operations, "first_error": self.first_error,
            });
            return writeln!(out, "{line}");
        }
        writeln!(
            out,
            "{phase} phase, workload {}, {} connections x pipeline {}: {:.0} ops/s in {:.2} s",
            self.workload,
            self.connections,
            self.pipeline,
            self.ops_per_second(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            out,
            "  {:<7} {:>10} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "errors", "ops/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
        )?;
        for row in &self.rows {
            let [p50, p90, p99, p999] = row.percentiles_micros;
            writeln!(
                out,
                "  {:<7} {:>10} {:>8} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>9}",
                row.op,
                row.count,
                row.errors,
                row.ops_per_second,
                p50,
                p90,
                p99,
                p999,
                row.max_micros
            )?;
        }
        if let Some(error) = &self.first_error {
            writeln!(out, "  first error: {error}")?;
        }
        Ok(())
    }
}
