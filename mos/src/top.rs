//! `mos top`: the cluster live, in the spirit of MOSIX's mosmon: per node the information
//! vector (load, cpus, speed, used and free memory) as bars, every process under the shim
//! with its home and where it runs now, and the migrations as they happen. Redrawn every
//! interval from the placer; `q` (or Esc, or Ctrl-C) quits.

use anyhow::Result;
use proto::msg::{LoadReport, ProcessRow};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Gauge, List, ListItem, Row, Table};
use ratatui::Frame;
use std::time::{Duration, Instant};


struct View {
    nodes: Vec<LoadReport>,
    procs: Vec<ProcessRow>,
    /// the placer's events (automatic migrations) and the moves seen here between two
    /// looks (any migration: a process whose node changed)
    events: Vec<String>,
    seen: Vec<String>,
    tracker: crate::watch::Tracker,
    error: Option<String>,
    at: Instant,
}

impl View {
    /// Take a new look; note every process that runs somewhere else than at the last.
    fn update(&mut self, nodes: Vec<LoadReport>, procs: Vec<ProcessRow>, events: Vec<String>) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        for ch in self.tracker.changes(&self.procs, &procs, now) {
            if let crate::watch::Change::Moved { row, from, .. } = ch {
                let s = now / 1000;
                let (h, m, s) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
                self.seen.push(format!("{h:02}:{m:02}:{s:02} UTC  pid {} ({}) moved {} -> {}", row.candidate.home_pid, row.candidate.cmd, from, row.node));
            }
        }
        let keep = self.seen.len().saturating_sub(100);
        self.seen.drain(..keep);
        (self.nodes, self.procs, self.events) = (nodes, procs, events);
    }
}

pub fn run(interval: Duration) -> Result<()> {
    // the first look before the screen is taken: a cluster that is not there is one line
    let (nodes, procs, events) = crate::watch::look()?;
    let mut view = View { nodes, procs, events, seen: Vec::new(), tracker: Default::default(), error: None, at: Instant::now() };
    let mut term = ratatui::init();
    let r = (|| -> Result<()> {
        loop {
            term.draw(|f| draw(f, &view))?;
            let until = view.at + interval;
            while Instant::now() < until {
                if event::poll(until.saturating_duration_since(Instant::now()))? {
                    if let Event::Key(k) = event::read()? {
                        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                        if k.kind == KeyEventKind::Press && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c) {
                            return Ok(());
                        }
                    }
                }
            }
            match crate::watch::look() {
                Ok((n, p, e)) => {
                    view.update(n, p, e);
                    view.error = None;
                }
                Err(e) => view.error = Some(format!("{e:#}")),
            }
            view.at = Instant::now();
        }
    })();
    ratatui::restore();
    r
}

fn draw(f: &mut Frame, v: &View) {
    let n = v.nodes.len() as u16;
    let [head, nodes, procs, events] = Layout::vertical([Constraint::Length(1), Constraint::Length(2 * n.max(1) + 2), Constraint::Min(5), Constraint::Length(8)]).areas(f.area());
    let title = match &v.error {
        Some(e) => Line::styled(format!(" mos top: {e}"), Style::new().fg(Color::Red)),
        None => Line::styled(format!(" mos top: {} nodes, {} processes    q quits", v.nodes.len(), v.procs.len()), Style::new().add_modifier(Modifier::BOLD)),
    };
    f.render_widget(title, head);
    let block = Block::new().borders(Borders::ALL).title(" nodes: load (runnable per reference cpu) and memory ");
    let inner = block.inner(nodes);
    f.render_widget(block, nodes);
    let rows = Layout::vertical(v.nodes.iter().flat_map(|_| [Constraint::Length(1), Constraint::Length(1)])).split(inner);
    for (i, node) in v.nodes.iter().enumerate() {
        let load = crate::report::load_of(node);
        let [name, bar] = Layout::horizontal([Constraint::Length(40), Constraint::Min(10)]).areas(rows[2 * i]);
        f.render_widget(Line::from(format!(" {:<8} {} cpus x{:.2}  runq {}", node.node, node.cpus, f64::from(node.speed) / 1000.0, node.run_queue)), name);
        f.render_widget(Gauge::default().gauge_style(Style::new().fg(if load > 1.0 { Color::Red } else { Color::Green })).ratio((load / 2.0).clamp(0.0, 1.0)).label(format!("load {load:.2}")), bar);
        let used = node.total_mem_mib.saturating_sub(node.free_mem_mib);
        let [mname, mbar] = Layout::horizontal([Constraint::Length(40), Constraint::Min(10)]).areas(rows[2 * i + 1]);
        f.render_widget(Line::from(format!("   {} guests, {} MiB free", node.guests, node.free_mem_mib)), mname);
        let ratio = if node.total_mem_mib == 0 { 0.0 } else { used as f64 / node.total_mem_mib as f64 };
        f.render_widget(Gauge::default().gauge_style(Style::new().fg(Color::Blue)).ratio(ratio.clamp(0.0, 1.0)).label(format!("mem {used}/{} MiB", node.total_mem_mib)), mbar);
    }
    let header = Row::new(["PID", "HOME", "WHERE", "ST", "CPU%", "RSS", "MOVES", "CMD"]).style(Style::new().add_modifier(Modifier::BOLD));
    let table_rows = v.procs.iter().map(|r| {
        let c = &r.candidate;
        let away = r.node != c.home;
        Row::new(vec![
            Cell::from(c.home_pid.to_string()),
            Cell::from(c.home.clone()),
            Cell::from(r.node.clone()).style(if away { Style::new().fg(Color::Yellow) } else { Style::new() }),
            Cell::from(if c.runnable { "R" } else { "S" }),
            Cell::from(format!("{:.1}", f64::from(c.cpu_permille) / 10.0)),
            Cell::from(format!("{} MiB", c.rss_mib)),
            Cell::from(r.migrations.len().to_string()),
            Cell::from(c.cmd.clone()),
        ])
    });
    let widths = [Constraint::Length(8), Constraint::Length(8), Constraint::Length(8), Constraint::Length(3), Constraint::Length(6), Constraint::Length(9), Constraint::Length(6), Constraint::Min(10)];
    f.render_widget(Table::new(table_rows, widths).header(header).block(Block::new().borders(Borders::ALL).title(" processes: home and where they run now ")), procs);
    let shown = events.height.saturating_sub(2) as usize;
    let all: Vec<&String> = v.events.iter().chain(v.seen.iter()).collect();
    let items: Vec<ListItem> = all.iter().rev().take(shown).rev().map(|e| ListItem::new(e.as_str())).collect();
    f.render_widget(List::new(items).block(Block::new().borders(Borders::ALL).title(" migrations ")), events);
}
