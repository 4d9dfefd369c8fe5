//! Where a call's instructions go: the per-function costs of two callgrind runs, N and 2N calls,
//! differenced (`bench profile`).
//!
//! [`count`](super::count) gives one figure a call; this gives it function by function, so a change
//! can be aimed and then proved. Each function's own cost (its instructions, not those of what it
//! calls) and its first-level data cache misses, per call; against a second subject, side by side
//! and sorted by the difference; or, for the functions whose name contains a text, what each of
//! their callers spends in them (inclusive) and how often it calls them: who calls `memcpy`, and
//! for how much.
//!
//! The costs are read from callgrind's output file itself (its format is documented with
//! valgrind: <https://valgrind.org/docs/manual/cl-format.html>), not from `callgrind_annotate`'s
//! text, so nothing but valgrind has to be installed.

use std::collections::HashMap;
use std::fmt::Write as _;

/// One function's (or one call site's) events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Instructions executed (`Ir`).
    pub instructions: u64,
    /// First-level data cache misses, reads and writes (`D1mr` + `D1mw`); 0 without
    /// `--cache-sim=yes`.
    pub data_misses: u64,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.instructions += other.instructions;
        self.data_misses += other.data_misses;
    }
}

/// What a caller spends in one callee: how many calls, and their inclusive cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCost {
    /// Calls made.
    pub count: u64,
    /// What the calls cost, the callee's callees included.
    pub cost: Cost,
}

/// The per-function costs of one callgrind output file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionCosts {
    /// Each function's own cost (exclusive: what it calls is not included).
    pub own: HashMap<String, Cost>,
    /// Each (caller, callee) pair's calls.
    pub calls: HashMap<(String, String), CallCost>,
}

impl FunctionCosts {
    /// Reads callgrind's output format: `events:` names the columns of cost lines, `positions:` how
    /// many position columns come first; `fn=` opens a function whose cost lines follow; `cfn=`
    /// names the callee of the next `calls=<count> <target>` line, whose following cost line is the
    /// call's inclusive cost (not the caller's own). Names are compressed: `(id) name` the first
    /// time, `(id)` after, one table for `fn=` and `cfn=`. Lines of other kinds are skipped.
    pub fn parse(text: &str) -> FunctionCosts {
        let mut costs = FunctionCosts::default();
        let mut columns = Columns::default();
        let mut names: HashMap<&str, &str> = HashMap::new();
        let mut function = "";
        let mut callee = "";
        // The count of the `calls=` line just read: its cost is on the next line.
        let mut pending: Option<u64> = None;
        for line in text.lines() {
            if let Some(count) = pending.take() {
                let cost = columns.cost(line);
                let entry = costs
                    .calls
                    .entry((function.to_owned(), callee.to_owned()))
                    .or_default();
                entry.count += count;
                entry.cost.add(cost);
                continue;
            }
            if let Some(spec) = line.strip_prefix("fn=") {
                function = function_name(spec, &mut names);
            } else if let Some(spec) = line.strip_prefix("cfn=") {
                callee = function_name(spec, &mut names);
            } else if let Some(rest) = line.strip_prefix("calls=") {
                pending = rest
                    .split_whitespace()
                    .next()
                    .and_then(|count| count.parse().ok());
            } else if let Some(events) = line.strip_prefix("events:") {
                columns.events(events);
            } else if let Some(positions) = line.strip_prefix("positions:") {
                columns.positions = positions.split_whitespace().count();
            } else if line.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '*'))
                && !function.is_empty()
            {
                let cost = columns.cost(line);
                costs.own.entry(function.to_owned()).or_default().add(cost);
            }
        }
        costs
    }
}

/// Which columns of a cost line hold which event.
#[derive(Debug)]
struct Columns {
    positions: usize,
    instructions: Option<usize>,
    reads_missed: Option<usize>,
    writes_missed: Option<usize>,
}

impl Default for Columns {
    fn default() -> Self {
        // The format's defaults: one position (`line`), one event (`Ir`).
        Columns {
            positions: 1,
            instructions: Some(0),
            reads_missed: None,
            writes_missed: None,
        }
    }
}

impl Columns {
    fn events(&mut self, line: &str) {
        let events: Vec<&str> = line.split_whitespace().collect();
        let index = |name: &str| events.iter().position(|event| *event == name);
        self.instructions = index("Ir");
        self.reads_missed = index("D1mr");
        self.writes_missed = index("D1mw");
    }

    /// A cost line's events; a column left out at the end of the line is zero, as the format says.
    fn cost(&self, line: &str) -> Cost {
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(self.positions)
            .map(|value| value.parse().unwrap_or(0))
            .collect();
        let at = |index: Option<usize>| index.and_then(|i| values.get(i)).copied().unwrap_or(0);
        Cost {
            instructions: at(self.instructions),
            data_misses: at(self.reads_missed) + at(self.writes_missed),
        }
    }
}

/// The function a `fn=` or `cfn=` line names: `(id) name` (remembered), `(id)` (looked up), or a
/// plain name.
fn function_name<'a>(spec: &'a str, names: &mut HashMap<&'a str, &'a str>) -> &'a str {
    let spec = spec.trim();
    match spec.strip_prefix('(').and_then(|rest| rest.split_once(')')) {
        Some((id, name)) if !name.trim().is_empty() => {
            let name = name.trim();
            names.insert(id, name);
            name
        }
        Some((id, _)) => names.get(id).copied().unwrap_or_default(),
        None => spec,
    }
}

/// A function's (or a caller's) figures per call: the 2N run's minus the N run's, over N.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The function, or the caller.
    pub function: String,
    /// Instructions a call.
    pub instructions: f64,
    /// First-level data cache misses a call.
    pub data_misses: f64,
    /// Calls made a call (only for [`callers_per_call`]'s rows).
    pub count: f64,
}

fn difference(n: u64, once: Cost, twice: Cost) -> (f64, f64) {
    let n = n.max(1) as f64;
    (
        (twice.instructions as f64 - once.instructions as f64) / n,
        (twice.data_misses as f64 - once.data_misses as f64) / n,
    )
}

/// Each function's own cost a call, the costliest first.
pub fn own_per_call(n: u64, once: &FunctionCosts, twice: &FunctionCosts) -> Vec<Row> {
    let mut rows: Vec<Row> = keys(&once.own, &twice.own)
        .into_iter()
        .map(|function| {
            let get = |costs: &FunctionCosts| costs.own.get(function).copied().unwrap_or_default();
            let (instructions, data_misses) = difference(n, get(once), get(twice));
            Row {
                function: function.to_owned(),
                instructions,
                data_misses,
                count: 0.0,
            }
        })
        .collect();
    sort_by_instructions(&mut rows);
    rows
}

/// For the functions whose name contains `callee`, what each caller outside them spends in them a
/// call (inclusive), and how many calls it makes; the costliest first.
pub fn callers_per_call(
    n: u64,
    once: &FunctionCosts,
    twice: &FunctionCosts,
    callee: &str,
) -> Vec<Row> {
    fn by_caller<'a>(costs: &'a FunctionCosts, callee: &str) -> HashMap<&'a str, CallCost> {
        let mut callers: HashMap<&str, CallCost> = HashMap::new();
        for ((caller, called), call) in &costs.calls {
            if called.contains(callee) && !caller.contains(callee) {
                let entry = callers.entry(caller.as_str()).or_default();
                entry.count += call.count;
                entry.cost.add(call.cost);
            }
        }
        callers
    }
    let (a, b) = (by_caller(once, callee), by_caller(twice, callee));
    let mut rows: Vec<Row> = keys(&a, &b)
        .into_iter()
        .map(|caller| {
            let (x, y) = (
                a.get(caller).copied().unwrap_or_default(),
                b.get(caller).copied().unwrap_or_default(),
            );
            let (instructions, data_misses) = difference(n, x.cost, y.cost);
            Row {
                function: caller.to_owned(),
                instructions,
                data_misses,
                count: (y.count as f64 - x.count as f64) / n.max(1) as f64,
            }
        })
        .collect();
    sort_by_instructions(&mut rows);
    rows
}

fn keys<'a, K: AsRef<str> + Eq + std::hash::Hash, V>(
    a: &'a HashMap<K, V>,
    b: &'a HashMap<K, V>,
) -> Vec<&'a str> {
    let mut keys: Vec<&str> = a.keys().chain(b.keys()).map(AsRef::as_ref).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn sort_by_instructions(rows: &mut [Row]) {
    rows.sort_by(|x, y| {
        y.instructions
            .total_cmp(&x.instructions)
            .then_with(|| x.function.cmp(&y.function))
    });
}

/// A subject's rows beside another's, matched by function, the largest differences first
/// (`(function, this, other)`; a function missing from one side is zero there).
pub fn compare(this: &[Row], other: &[Row]) -> Vec<(String, Row, Row)> {
    let by_function = |rows: &[Row]| -> HashMap<String, Row> {
        rows.iter()
            .map(|row| (row.function.clone(), row.clone()))
            .collect()
    };
    let (this, other) = (by_function(this), by_function(other));
    let side = |rows: &HashMap<String, Row>, function: &str| {
        rows.get(function).cloned().unwrap_or_else(|| Row {
            function: function.to_owned(),
            instructions: 0.0,
            data_misses: 0.0,
            count: 0.0,
        })
    };
    let mut pairs: Vec<(String, Row, Row)> = keys(&this, &other)
        .into_iter()
        .map(|function| {
            (
                function.to_owned(),
                side(&this, function),
                side(&other, function),
            )
        })
        .collect();
    pairs.sort_by(|(fx, x, ox), (fy, y, oy)| {
        let dx = (x.instructions - ox.instructions).abs();
        let dy = (y.instructions - oy.instructions).abs();
        dy.total_cmp(&dx).then_with(|| fx.cmp(fy))
    });
    pairs
}

/// A table of `rows` (at most `top`), for the terminal.
pub fn table(rows: &[Row], top: usize, with_count: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>9}{}  function",
        "instr/call",
        "D1 miss",
        if with_count { "  calls/call" } else { "" }
    );
    for row in rows
        .iter()
        .filter(|row| row.instructions.abs() >= 0.5)
        .take(top)
    {
        let count = if with_count {
            format!("  {:>10.2}", row.count)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:>12.0} {:>9.1}{count}  {}",
            row.instructions, row.data_misses, row.function
        );
    }
    out
}

/// A table of [`compare`]'s pairs (at most `top`), `this` and `other` naming the two subjects.
pub fn comparison_table(
    pairs: &[(String, Row, Row)],
    top: usize,
    this: &str,
    other: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>12} {:>12} {:>9}  function (instructions and D1 misses a call; {this} minus {other})",
        this, other, "difference", "D1 diff"
    );
    for (function, x, o) in pairs
        .iter()
        .filter(|(_, x, o)| (x.instructions - o.instructions).abs() >= 0.5)
        .take(top)
    {
        let _ = writeln!(
            out,
            "{:>12.0} {:>12.0} {:>+12.0} {:>+9.1}  {function}",
            x.instructions,
            o.instructions,
            x.instructions - o.instructions,
            x.data_misses - o.data_misses,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs of a made-up program in callgrind's format: `main` calls `work` (which calls
    /// `memcpy`) and `memcpy` itself; names compressed as callgrind writes them; relative positions
    /// and a cost line shorter than the events.
    fn run(calls: u64) -> String {
        format!(
            "version: 1\n\
             positions: line\n\
             events: Ir D1mr D1mw\n\
             summary: 0 0 0\n\
             fl=(1) main.rs\n\
             fn=(1) main\n\
             10 {main} 1 0\n\
             +2 5\n\
             cfn=(2) work\n\
             calls={calls} 0\n\
             12 {work_inclusive} {work_misses} 0\n\
             cfn=(3) memcpy\n\
             calls={calls} 0\n\
             13 {memcpy} 2 {calls}\n\
             fn=(2)\n\
             20 {work} 0 1\n\
             cfn=(3)\n\
             calls={twice} 0\n\
             21 {memcpy2} 0 0\n\
             fn=(3)\n\
             * {memcpy_own} {calls} {calls}\n\
             totals: 0\n",
            main = 100 + calls,
            work = 50 * calls,
            work_inclusive = 70 * calls,
            work_misses = calls,
            memcpy = 10 * calls,
            memcpy2 = 20 * calls,
            memcpy_own = 30 * calls,
            twice = 2 * calls,
        )
    }

    #[test]
    fn own_costs_leave_out_what_a_function_calls() {
        let costs = FunctionCosts::parse(&run(10));
        assert_eq!(
            costs.own["main"],
            Cost {
                instructions: 110 + 5,
                data_misses: 1
            }
        );
        assert_eq!(costs.own["work"].instructions, 500);
        assert_eq!(costs.own["work"].data_misses, 1);
        assert_eq!(costs.own["memcpy"].instructions, 300);
        let call = costs.calls[&("work".to_owned(), "memcpy".to_owned())];
        assert_eq!(call.count, 20);
        assert_eq!(call.cost.instructions, 200);
    }

    #[test]
    fn a_call_costs_the_difference_of_two_runs_over_n() {
        let (once, twice) = (
            FunctionCosts::parse(&run(10)),
            FunctionCosts::parse(&run(20)),
        );
        let rows = own_per_call(10, &once, &twice);
        let names: Vec<&str> = rows.iter().map(|row| row.function.as_str()).collect();
        assert_eq!(names, ["work", "memcpy", "main"]);
        assert_eq!(rows[0].instructions, 50.0);
        assert_eq!(rows[1].instructions, 30.0);
        assert_eq!(rows[1].data_misses, 2.0);
        // `main`'s start-up (100) drops out: one instruction a call is left.
        assert_eq!(rows[2].instructions, 1.0);
    }

    #[test]
    fn callers_of_a_function_are_counted_from_outside_it() {
        let (once, twice) = (
            FunctionCosts::parse(&run(10)),
            FunctionCosts::parse(&run(20)),
        );
        let rows = callers_per_call(10, &once, &twice, "memcpy");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].function, "work");
        assert_eq!((rows[0].instructions, rows[0].count), (20.0, 2.0));
        assert_eq!(rows[1].function, "main");
        // Its calls' misses: 2 read misses in both runs (start-up), one write miss a call.
        assert_eq!((rows[1].instructions, rows[1].data_misses), (10.0, 1.0));
    }

    #[test]
    fn a_comparison_puts_the_largest_difference_first_and_keeps_both_sides() {
        let row = |function: &str, instructions: f64| Row {
            function: function.to_owned(),
            instructions,
            data_misses: 0.0,
            count: 0.0,
        };
        let ours = [row("a", 100.0), row("b", 10.0)];
        let theirs = [row("a", 90.0), row("c", 50.0)];
        let pairs = compare(&ours, &theirs);
        let order: Vec<(&str, f64, f64)> = pairs
            .iter()
            .map(|(f, x, o)| (f.as_str(), x.instructions, o.instructions))
            .collect();
        assert_eq!(
            order,
            [("c", 0.0, 50.0), ("a", 100.0, 90.0), ("b", 10.0, 0.0)]
        );
        let text = comparison_table(&pairs, 10, "ours", "theirs");
        let line = text.lines().find(|line| line.ends_with("  c")).unwrap();
        assert!(line.contains(" -50 ") && line.contains("+0.0"), "{text}");
    }
}
