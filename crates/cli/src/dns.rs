//! `mailshift dns check`, `mailshift dns watch` and `mailshift plan`: the cutover
//! commands an operator runs around the MX switch.

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use clap::{Args, Subcommand};
use mailshift_core::cutover::{self, Busy, Finding, Level, PlanOptions};
use mailshift_dns::check::{self, Options, Sees, View};
use mailshift_dns::discovery::ClientHosts;
use mailshift_dns::lookup::{Dns, Role, Server, parse_server};
use mailshift_dns::mta_sts;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum DnsCommand {
    /// Is the domain ready for the switch? MX and TTL as every nameserver sees them,
    /// SPF, DKIM and DMARC for the new provider; exit 0 only when nothing is an error
    #[command(
        long_about = "Check a domain's DNS before (and after) the MX switch.\n\n\
        The MX is asked of the domain's authoritative nameservers (found through NS, or \
        given with --authoritative) and of recursive resolvers (--nameserver, or this \
        machine's), and compared: which MX is active (old, new or both), whether servers \
        disagree, and whether the TTL is low enough for the planned switch (--switch-at). \
        SPF must be a single valid record that authorises the new provider \
        (--spf-include, followed through includes within the 10-lookup limit) and is not \
        `+all`; each DKIM selector must publish a usable key; DMARC must be valid.\n\n\
        The records that can silently stop delivery after the switch are checked too: an \
        MTA-STS policy (the _mta-sts TXT record and the policy file fetched over HTTPS from \
        mta-sts.DOMAIN) in enforce or testing mode that does not list the new MX is an \
        error, with the date by which it must change (max_age before --switch-at); TLS-RPT; \
        DANE TLSA records on the old MX but not on the new one; and the client discovery \
        records (SRV _imaps/_imap/_submissions/_submission/_autodiscover, autoconfig and \
        autodiscover hosts) that still point at the old provider (--old-imap-host, \
        --new-imap-host, --old-smtp-host, --new-smtp-host).\n\n\
        Every finding is ok, warn or error, with a one-line fix. Every lookup has a \
        timeout: a dead or lying server is a finding, never a hang.\n\n\
        Exit status: 0 when nothing is an error; 1 otherwise; 2 on bad usage."
    )]
    Check(Box<CheckArgs>),
    /// Watch the MX switch propagate: what fraction of nameservers sees the new MX
    #[command(long_about = "Watch the MX switch propagate.\n\n\
        Asks the authoritative nameservers and the resolvers repeatedly (as often as the \
        shortest TTL allows, at least every --interval) and shows what fraction returns \
        only the new MX. A line is printed whenever that changes.\n\n\
        Exit status: 0 once every server sees the new MX (at once without \
        --until-complete: the state is printed once); 1 when --timeout passes first.")]
    Watch(Box<WatchArgs>),
}

/// Where to ask.
#[derive(Args, Clone)]
pub struct Servers {
    /// A recursive resolver to ask, IP[:PORT] (repeatable; default: /etc/resolv.conf)
    #[arg(long = "nameserver", alias = "resolver", value_name = "IP[:PORT]")]
    nameservers: Vec<String>,
    /// An authoritative nameserver of the domain, IP[:PORT] (repeatable; default: the
    /// domain's NS records)
    #[arg(long, value_name = "IP[:PORT]")]
    authoritative: Vec<String>,
    /// Seconds one DNS query may take
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    dns_timeout: u64,
}

impl Servers {
    fn parse(&self) -> anyhow::Result<(Vec<Server>, Vec<Server>)> {
        let parse = |list: &[String], role| -> anyhow::Result<Vec<Server>> {
            list.iter()
                .map(|s| parse_server(s, role).map_err(anyhow::Error::msg))
                .collect()
        };
        Ok((
            parse(&self.nameservers, Role::Recursive)?,
            parse(&self.authoritative, Role::Authoritative)?,
        ))
    }

    fn dns(&self) -> Dns {
        Dns::new(Duration::from_secs(self.dns_timeout.max(1)))
    }
}

#[derive(Args)]
pub struct CheckArgs {
    /// The domain whose mail moves, e.g. example.com
    domain: String,
    /// The new provider's MX host
    #[arg(long, value_name = "HOST")]
    new_mx: String,
    /// The old provider's MX host (otherwise: any MX that is not the new one)
    #[arg(long, value_name = "HOST")]
    old_mx: Option<String>,
    /// The SPF include the new provider requires, e.g. spf.new.example
    #[arg(long, value_name = "DOMAIN")]
    spf_include: Option<String>,
    /// A DKIM selector the new provider signs with (repeatable)
    #[arg(long = "dkim-selector", value_name = "SEL")]
    dkim_selectors: Vec<String>,
    /// The planned switch, RFC 3339 (e.g. 2026-12-05T06:00+01:00): TTL advice relative to it
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    switch_at: Option<DateTime<FixedOffset>>,
    #[command(flatten)]
    servers: Servers,
    #[command(flatten)]
    delivery: DeliveryArgs,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

/// What `dns check` needs for the records that govern delivery after the switch.
#[derive(Args, Clone, Default)]
pub struct DeliveryArgs {
    /// Trust this CA certificate (PEM) when fetching the MTA-STS policy, besides the system's
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Seconds the MTA-STS policy fetch may take (connection included)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    https_timeout: u64,
    /// HTTPS port of the MTA-STS policy host (tests)
    #[arg(long, default_value_t = 443, value_name = "PORT", hide = true)]
    mta_sts_port: u16,
    /// The new provider's IMAP host (client discovery records should point at it)
    #[arg(long, value_name = "HOST")]
    new_imap_host: Option<String>,
    /// The old provider's IMAP host (client discovery records should stop pointing at it)
    #[arg(long, value_name = "HOST")]
    old_imap_host: Option<String>,
    /// The new provider's submission host
    #[arg(long, value_name = "HOST")]
    new_smtp_host: Option<String>,
    /// The old provider's submission host
    #[arg(long, value_name = "HOST")]
    old_smtp_host: Option<String>,
}

impl DeliveryArgs {
    fn mta_sts(&self) -> mta_sts::Fetch {
        mta_sts::Fetch {
            ca_file: self.ca_file.clone(),
            port: self.mta_sts_port,
            timeout: Duration::from_secs(self.https_timeout.max(1)),
        }
    }

    fn client_hosts(&self) -> ClientHosts {
        ClientHosts {
            new_imap: self.new_imap_host.clone(),
            old_imap: self.old_imap_host.clone(),
            new_smtp: self.new_smtp_host.clone(),
            old_smtp: self.old_smtp_host.clone(),
        }
    }
}

#[derive(Args)]
pub struct WatchArgs {
    domain: String,
    /// The new provider's MX host
    #[arg(long, value_name = "HOST")]
    new_mx: String,
    /// The old provider's MX host
    #[arg(long, value_name = "HOST")]
    old_mx: Option<String>,
    #[command(flatten)]
    servers: Servers,
    /// Keep watching until every server sees the new MX
    #[arg(long)]
    until_complete: bool,
    /// Give up after this long (with --until-complete), e.g. 30m, 2h
    #[arg(long, default_value = "2h", value_parser = crate::migrate::parse_duration)]
    timeout: Duration,
    /// Longest wait between rounds (shorter when TTLs are shorter)
    #[arg(long, default_value = "60s", value_parser = crate::migrate::parse_duration)]
    interval: Duration,
    /// One JSON object per round instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PlanArgs {
    /// The domain whose mail moves
    domain: String,
    /// The MX switch, RFC 3339 with its UTC offset, e.g. 2026-12-05T06:00+01:00
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    switch_at: DateTime<FixedOffset>,
    /// How long the old server keeps receiving after the switch
    #[arg(long, default_value = "72h", value_parser = crate::migrate::parse_duration)]
    dual_reception: Duration,
    /// Interval of incremental passes before the switch
    #[arg(long, default_value = "4h", value_parser = crate::migrate::parse_duration)]
    incremental_every: Duration,
    /// A busy period to avoid: `month-end`, `month-end:N` or YYYY-MM-DD..YYYY-MM-DD
    /// (repeatable; default: month-end)
    #[arg(long, value_name = "PERIOD", value_parser = Busy::parse)]
    busy: Vec<Busy>,
    /// Print the plan as JSON
    #[arg(long)]
    json: bool,
    /// Record the plan in the fleet's database: the scheduler then drives the domain
    /// through its phases and switches its mailboxes to dual reception when it sees
    /// the new MX
    #[arg(
        long,
        env = "MAILSHIFT_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database: Option<String>,
    /// The new provider's MX host, watched by the scheduler to detect the switch
    #[arg(long, value_name = "HOST")]
    new_mx: Option<String>,
    /// The old provider's MX host
    #[arg(long, value_name = "HOST")]
    old_mx: Option<String>,
    /// The SPF include the new provider requires, checked by the dashboard's DNS check
    /// (kept from the recorded cutover when not given)
    #[arg(long, value_name = "DOMAIN")]
    spf_include: Option<String>,
    /// A DKIM selector the new provider signs with (repeatable; kept from the recorded
    /// cutover when none is given)
    #[arg(long = "dkim-selector", value_name = "SEL")]
    dkim_selectors: Vec<String>,
    #[command(flatten)]
    servers: Servers,
}

/// RFC 3339, with `T` or a space, seconds optional: `2026-12-05T06:00+01:00`.
pub(crate) fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    let t = s.trim().replacen(' ', "T", 1);
    DateTime::parse_from_rfc3339(&t)
        .or_else(|_| DateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M%:z"))
        .or_else(|_| DateTime::parse_from_str(&t, "%Y-%m-%dT%H:%MZ").map(|d| d.fixed_offset()))
        .map_err(|_| {
            format!("`{s}` is not a time with its UTC offset; write e.g. 2026-12-05T06:00+01:00")
        })
}

fn now() -> DateTime<FixedOffset> {
    Utc::now().fixed_offset()
}

pub async fn dns(cmd: DnsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DnsCommand::Check(a) => run_check(*a).await,
        DnsCommand::Watch(a) => run_watch(*a).await,
    }
}

async fn run_check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let (resolvers, authoritative) = a.servers.parse()?;
    let o = Options {
        new_mx: a.new_mx.clone(),
        old_mx: a.old_mx.clone(),
        spf_include: a.spf_include.clone(),
        dkim_selectors: a.dkim_selectors.clone(),
        resolvers,
        authoritative,
        switch_at: a.switch_at,
        mta_sts: a.delivery.mta_sts(),
        client_hosts: a.delivery.client_hosts(),
    };
    let report = check::check(&a.servers.dns(), &a.domain, &o, now()).await;
    if a.json {
        crate::json::print(crate::json::DNS_CHECK, &report)?;
    } else {
        println!("DNS check of {}", report.domain);
        print_views(&report.views);
        println!();
        print_findings(&report.findings);
    }
    Ok(if report.level == Level::Error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn sees_text(s: Sees) -> &'static str {
    match s {
        Sees::Old => "old",
        Sees::New => "NEW",
        Sees::Mixed => "old+new",
        Sees::Other => "other",
        Sees::Unknown => "-",
    }
}

fn print_views(views: &[View]) {
    let w = views
        .iter()
        .map(|v| v.server.to_string().chars().count())
        .max()
        .unwrap_or(10)
        .clamp(10, 60);
    for v in views {
        let role = match v.server.role {
            Role::Authoritative => "authoritative",
            Role::Recursive => "resolver",
        };
        let answer = match &v.mx {
            Ok(a) => format!(
                "{}  (TTL {})",
                a.records
                    .iter()
                    .map(|m| format!("{} {}", m.preference, m.host))
                    .collect::<Vec<_>>()
                    .join(", "),
                a.ttl
            ),
            Err(e) => e.to_string(),
        };
        println!(
            "  {role:<13}  {:<w$}  {:<7}  {answer}",
            v.server.to_string(),
            sees_text(v.sees)
        );
    }
}

pub(crate) fn print_findings(findings: &[Finding]) {
    let w = findings
        .iter()
        .map(|f| f.check.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    for f in findings {
        println!("  {:<5}  {:<w$}  {}", f.level.as_str(), f.check, f.message);
        if let Some(fix) = &f.fix {
            println!("  {:<5}  {:<w$}  fix: {fix}", "", "");
        }
    }
    let count = |l| findings.iter().filter(|f| f.level == l).count();
    println!(
        "\n{} ok, {} warning(s), {} error(s)",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Error)
    );
}

async fn run_watch(a: WatchArgs) -> anyhow::Result<ExitCode> {
    let (mut resolvers, authoritative) = a.servers.parse()?;
    let dns = a.servers.dns();
    let mut findings = Vec::new();
    if resolvers.is_empty() && authoritative.is_empty() {
        resolvers = Dns::system_resolvers();
    }
    let mut servers = if authoritative.is_empty() {
        check::authoritative(&dns, &a.domain, &resolvers, &mut findings).await
    } else {
        authoritative
    };
    for f in &findings {
        eprintln!("{}: {}", f.level.as_str(), f.message);
    }
    servers.extend(resolvers);
    anyhow::ensure!(
        !servers.is_empty(),
        "no nameserver to watch for {}: give --authoritative or --nameserver",
        a.domain
    );
    let tty = std::io::stdout().is_terminal() && !a.json;
    let started = tokio::time::Instant::now();
    let mut last: Option<(usize, Vec<Sees>)> = None;
    loop {
        let p = check::propagation(&dns, &a.domain, &servers, &a.new_mx, a.old_mx.as_deref()).await;
        let state = (
            p.seeing_new,
            p.views.iter().map(|v| v.sees).collect::<Vec<_>>(),
        );
        if a.json {
            println!("{}", serde_json::to_string(&p)?);
        } else if last.as_ref() != Some(&state) {
            if tty {
                // Clear the live status line before printing a change.
                print!("\r\x1b[2K");
            }
            let who = p
                .views
                .iter()
                .map(|v| format!("{} {}", v.server, sees_text(v.sees)))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "{} {:>3}% ({}/{}) see {}: {who}",
                now().format("%H:%M:%S"),
                p.percent(),
                p.seeing_new,
                p.total,
                a.new_mx
            );
        }
        last = Some(state);
        if p.complete() {
            println!("every nameserver sees the new MX {}", a.new_mx);
            return Ok(ExitCode::SUCCESS);
        }
        if !a.until_complete {
            return Ok(ExitCode::from(1));
        }
        let wait = Duration::from_secs(p.next_in_secs).min(a.interval);
        if started.elapsed() + wait > a.timeout {
            println!(
                "timeout after {}s: {}% of nameservers see the new MX",
                started.elapsed().as_secs(),
                p.percent()
            );
            return Ok(ExitCode::from(1));
        }
        if tty {
            use std::io::Write;
            print!(
                "\r\x1b[2K{}% see the new MX; next look in {}s (Ctrl-C to stop)",
                p.percent(),
                wait.as_secs()
            );
            let _ = std::io::stdout().flush();
        }
        tokio::time::sleep(wait).await;
    }
}

/// Builds the cutover plan from the command line.
pub(crate) fn plan_options(a: &PlanArgs) -> anyhow::Result<PlanOptions> {
    let mut o = PlanOptions::new(a.switch_at);
    o.dual_reception =
        chrono::Duration::from_std(a.dual_reception).context("--dual-reception is too long")?;
    o.incremental_every = chrono::Duration::from_std(a.incremental_every)
        .context("--incremental-every is too long")?;
    if !a.busy.is_empty() {
        o.busy = a.busy.clone();
    }
    Ok(o)
}

pub async fn plan(a: PlanArgs) -> anyhow::Result<ExitCode> {
    let o = plan_options(&a)?;
    let p = cutover::plan(&mailshift_dns::lookup::host_name(&a.domain), &o);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Cutover plan for {} (switch at {})\n",
        p.domain,
        cutover::stamp(p.switch_at)
    );
    for s in &p.steps {
        let when = match s.until {
            Some(u) => format!("{} -> {}", cutover::stamp(s.at), cutover::stamp(u)),
            None => cutover::stamp(s.at),
        };
        println!("  {:<9} {when}\n  {:<9} {}\n", s.day, "", s.what);
    }
    for w in &p.warnings {
        println!("warning: {w}");
    }
    if let Some(url) = &a.database {
        store_plan(&a, url, &p).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn store_plan(a: &PlanArgs, url: &str, p: &cutover::CutoverPlan) -> anyhow::Result<()> {
    a.servers.parse()?; // validate before storing
    let store = mailshift_store::open_fleet(url, true, None).await?;
    // What was set since (from the dashboard, say) and is not given again is kept.
    let recorded = store
        .domains()
        .await?
        .into_iter()
        .find(|d| d.config.name == p.domain)
        .map(|d| d.config)
        .unwrap_or_default();
    let config = cutover::DomainConfig {
        name: p.domain.clone(),
        new_mx: a.new_mx.as_deref().map(mailshift_dns::lookup::host_name),
        old_mx: a.old_mx.as_deref().map(mailshift_dns::lookup::host_name),
        nameservers: a.servers.nameservers.clone(),
        authoritative: a.servers.authoritative.clone(),
        switch_at: Some(p.switch_at.to_rfc3339()),
        dual_reception_secs: a.dual_reception.as_secs(),
        spf_include: a
            .spf_include
            .as_deref()
            .map(mailshift_dns::lookup::host_name)
            .or(recorded.spf_include),
        dkim_selectors: if a.dkim_selectors.is_empty() {
            recorded.dkim_selectors
        } else {
            a.dkim_selectors.clone()
        },
    };
    store
        .put_domain(&config, Some(&serde_json::to_string(p)?))
        .await?;
    eprintln!(
        "recorded the cutover of {} in the fleet database{}",
        p.domain,
        if config.new_mx.is_none() {
            "; without --new-mx the scheduler cannot see the switch happen"
        } else {
            ""
        }
    );
    Ok(())
}

/// `dns check` of a domain the fleet tracks, with the servers, MX hosts, SPF include and
/// DKIM selectors its cutover was recorded with (the dashboard's DNS readiness).
pub(crate) async fn check_domain(c: &cutover::DomainConfig) -> anyhow::Result<check::Report> {
    let new_mx = c.new_mx.clone().with_context(|| {
        format!(
            "domain {} has no new MX recorded: record its cutover with `mailshift plan --database ... --new-mx HOST`",
            c.name
        )
    })?;
    let parse = |list: &[String], role| -> anyhow::Result<Vec<Server>> {
        list.iter()
            .map(|s| parse_server(s, role).map_err(anyhow::Error::msg))
            .collect()
    };
    let o = Options {
        new_mx,
        old_mx: c.old_mx.clone(),
        spf_include: c.spf_include.clone(),
        dkim_selectors: c.dkim_selectors.clone(),
        resolvers: parse(&c.nameservers, Role::Recursive)?,
        authoritative: parse(&c.authoritative, Role::Authoritative)?,
        switch_at: c.switch_at.as_deref().and_then(|s| parse_time(s).ok()),
        ..Options::default()
    };
    Ok(check::check(&Dns::new(Duration::from_secs(3)), &c.name, &o, now()).await)
}
