//! Rendering: the egui window drawn from the [`ViewModel`].
//!
//! [`RoundtableApp`] drains [`Update`]s into the model at the start of each frame, draws the model,
//! and turns clicks into [`Action`]s on the backend's channel. It never waits for an answer:
//! answers arrive later as updates. Layout: sessions by workspace and the lobby on the left, the
//! roster on the right, and in the middle one of the tabs — chat (messages, streaming agent text,
//! vote cards, composer), shares (host), settings, audit log (host).

use super::model::*;
pub use crate::app::render::utc_text;
use crate::ids::{ParticipantId, SessionId, VoteId, WorkspaceId};
use crate::persist::AgentSpec;
use crate::protocol::*;
use eframe::egui;
use egui::{Color32, RichText};
use std::collections::BTreeMap;
use tokio::sync::mpsc::UnboundedSender;

/// A workspace in the sessions panel: id, name, and its sessions' ids with their row text.
type SessionGroup = (WorkspaceId, String, Vec<(SessionId, String)>);

/// The middle area's tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Chat,
    Shares,
    Settings,
    Audit,
}

/// The share manager's mint form.
#[derive(Clone, Debug, PartialEq)]
pub struct MintForm {
    pub label: String,
    /// Workspaces ticked, by id.
    pub workspaces: BTreeMap<WorkspaceId, bool>,
    pub collaborative: bool,
    pub consensus_required: bool,
    pub admission_required: bool,
    pub observer: bool,
    /// Expiry in minutes (0 = never).
    pub expires_minutes: u64,
    /// Most pairings (0 = unlimited).
    pub max_uses: u32,
    /// Vote deadline in seconds (0 = none).
    pub vote_deadline_secs: u64,
}

impl Default for MintForm {
    fn default() -> Self {
        Self {
            label: String::new(),
            workspaces: BTreeMap::new(),
            collaborative: true,
            consensus_required: true,
            admission_required: false,
            observer: false,
            expires_minutes: 0,
            max_uses: 0,
            vote_deadline_secs: 0,
        }
    }
}

impl MintForm {
    /// The `mint_share` params the form describes, or why it cannot be sent.
    pub fn params(&self) -> Result<MintShareParams, &'static str> {
        let workspaces: Vec<WorkspaceId> =
            self.workspaces.iter().filter(|(_, on)| **on).map(|(w, _)| w.clone()).collect();
        if workspaces.is_empty() {
            return Err("tick at least one workspace");
        }
        Ok(MintShareParams {
            label: self.label.trim().to_string(),
            workspaces,
            collaborative: self.collaborative,
            consensus_required: self.consensus_required,
            admission_required: self.admission_required,
            role: if self.observer { Role::Observer } else { Role::Participant },
            expires_in_ms: (self.expires_minutes > 0).then_some(self.expires_minutes * 60_000),
            max_uses: (self.max_uses > 0).then_some(self.max_uses),
            vote_deadline_ms: (self.vote_deadline_secs > 0).then_some(self.vote_deadline_secs * 1000),
        })
    }
}

/// The agent a new workspace runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentChoice {
    /// The built-in demo agent.
    Demo,
    /// Claude Code (`claude`, or the binary given as the command path).
    Claude,
    /// The OpenAI Codex CLI as `codex app-server` (the host's `--codex-bin`, or the binary given
    /// as the command path).
    Codex,
    /// Any executable speaking the agent protocol (command path required).
    Command,
}

/// The add-workspace form (host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceForm {
    pub name: String,
    /// Directory the agent works in, on the host.
    pub dir: String,
    pub agent: AgentChoice,
    /// Executable for `command`; optional binary path for `claude` and `codex`.
    pub command: String,
    /// `claude` and `codex`: start every turn in plan mode, so the plan goes to a vote first
    /// (default on).
    pub plan_first: bool,
}

impl Default for WorkspaceForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            dir: String::new(),
            agent: AgentChoice::Demo,
            command: String::new(),
            plan_first: true,
        }
    }
}

impl WorkspaceForm {
    /// The `add_workspace` params the form describes, or why it cannot be sent.
    pub fn params(&self) -> Result<AddWorkspaceParams, &'static str> {
        let (name, dir, command) = (self.name.trim(), self.dir.trim(), self.command.trim());
        if name.is_empty() {
            return Err("give the workspace a name");
        }
        if dir.is_empty() {
            return Err("give the directory the agent works in");
        }
        let command = (!command.is_empty()).then(|| command.to_string());
        let agent = match self.agent {
            AgentChoice::Demo => None,
            AgentChoice::Claude | AgentChoice::Codex => {
                let kind = if self.agent == AgentChoice::Claude { "claude" } else { "codex" };
                Some(AgentSpec { kind: kind.into(), command, args: Vec::new(), plan_first: Some(self.plan_first) })
            }
            AgentChoice::Command => {
                let Some(command) = command else { return Err("the command agent needs the executable's path") };
                Some(AgentSpec { kind: "command".into(), command: Some(command), args: Vec::new(), plan_first: None })
            }
        };
        Ok(AddWorkspaceParams { name: name.to_string(), dir: dir.to_string(), agent })
    }
}

/// The window's colours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThemeChoice {
    /// Light or dark as the system says.
    #[default]
    System,
    Light,
    Dark,
}

impl ThemeChoice {
    fn preference(self) -> egui::ThemePreference {
        match self {
            ThemeChoice::System => egui::ThemePreference::System,
            ThemeChoice::Light => egui::ThemePreference::Light,
            ThemeChoice::Dark => egui::ThemePreference::Dark,
        }
    }
}

/// This window's own preferences, kept in `DATA_DIR/window.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prefs {
    #[serde(default)]
    pub theme: ThemeChoice,
}

/// Where the window keeps its preferences.
pub fn prefs_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("window.json")
}

/// The host's settings being edited (host window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsForm {
    pub host_name: String,
    pub default_consensus: bool,
    /// 0 = no default deadline.
    pub deadline_secs: u64,
}

impl SettingsForm {
    /// The `update_settings` params, or why they cannot be sent.
    pub fn params(&self) -> Result<UpdateSettingsParams, &'static str> {
        let name = self.host_name.trim();
        if name.is_empty() {
            return Err("give the host a display name");
        }
        Ok(UpdateSettingsParams {
            host_name: Some(name.to_string()),
            default_consensus: Some(self.default_consensus),
            default_vote_deadline_ms: Some(self.deadline_secs * 1000),
        })
    }
}

/// The window's state: the model plus what is being typed.
pub struct RoundtableApp {
    pub model: ViewModel,
    pub tab: Tab,
    /// The composer's text.
    pub composer: String,
    /// The composer sends to the room (people only) instead of the agent.
    pub to_room: bool,
    /// Room chat lines quoted into the next prompt: (author, text), in the order picked.
    pub quoted: Vec<(String, String)>,
    /// The message sent from the composer and not answered yet: its `client_msg_id` and the text
    /// typed, and whether it went to the room. The composer keeps the text until the host
    /// accepts it ([`Update::Sent`]); a refusal leaves it there ([`Update::SendFailed`]).
    pub sending: Option<(String, String, bool)>,
    /// Deny reasons being typed, per vote.
    pub deny_reasons: BTreeMap<VoteId, String>,
    /// Answers being chosen, per vote (one per question).
    pub answers: BTreeMap<VoteId, Vec<String>>,
    pub mint: MintForm,
    /// Title for the next session, per workspace (host).
    pub new_titles: BTreeMap<WorkspaceId, String>,
    /// The session being renamed and the title typed so far (host).
    pub renaming: Option<(SessionId, String)>,
    /// The agent model being typed for a session (`set_agent_settings`).
    pub model_edit: Option<(SessionId, String)>,
    /// The session whose Clear waits for confirmation (host).
    pub confirm_clear: Option<SessionId>,
    /// The participant whose kick waits for confirmation, and whether it revokes their share.
    pub confirm_kick: Option<(ParticipantId, bool)>,
    /// The share whose revocation waits for confirmation (host).
    pub confirm_revoke: Option<crate::ids::ShareId>,
    /// The rename field wants the keyboard focus (set when Rename is clicked).
    rename_focus: bool,
    /// The composer wants the keyboard focus (set when Quote is clicked).
    composer_focus: bool,
    /// The host's settings being edited; `None` until the host's settings arrive.
    pub settings_form: Option<SettingsForm>,
    /// The host's settings the form was last filled from.
    settings_base: Option<SettingsForm>,
    /// Side panels shown (below [`NARROW_WIDTH`] they start folded away, with buttons to open
    /// them).
    pub show_sessions: bool,
    pub show_people: bool,
    /// Whether the last frame was narrow (`None` before the first frame).
    narrow: Option<bool>,
    /// The invite box on the chat view is open (host).
    pub invite_open: bool,
    /// This window's preferences and where they are kept (`None`: not kept, e.g. in tests).
    pub prefs: Prefs,
    prefs_path: Option<std::path::PathBuf>,
    /// Whether the add-workspace form is open (host).
    pub workspace_form_open: bool,
    pub workspace_form: WorkspaceForm,
    /// Title of the first session offered after adding a workspace.
    pub first_session_title: String,
    /// The link pasted on the start screen.
    pub start_link: String,
    /// The name typed on the start screen (`None`: the model's, untouched).
    pub start_name: Option<String>,
    /// The link field was given the keyboard focus (once, when the start screen first shows).
    start_focused: bool,
    actions: UnboundedSender<Action>,
    updates: std::sync::mpsc::Receiver<Update>,
    /// Prefix of this window's `client_msg_id`s.
    tag: String,
    sent: u64,
}

impl RoundtableApp {
    /// A window over `model`, sending actions to `actions` and reading updates from `updates`.
    pub fn new(model: ViewModel, actions: UnboundedSender<Action>, updates: std::sync::mpsc::Receiver<Update>) -> Self {
        Self {
            model,
            tab: Tab::Chat,
            composer: String::new(),
            to_room: false,
            quoted: Vec::new(),
            sending: None,
            deny_reasons: BTreeMap::new(),
            answers: BTreeMap::new(),
            mint: MintForm::default(),
            new_titles: BTreeMap::new(),
            renaming: None,
            model_edit: None,
            confirm_clear: None,
            confirm_kick: None,
            confirm_revoke: None,
            rename_focus: false,
            composer_focus: false,
            settings_form: None,
            settings_base: None,
            show_sessions: true,
            show_people: true,
            narrow: None,
            invite_open: false,
            prefs: Prefs::default(),
            prefs_path: None,
            workspace_form_open: false,
            workspace_form: WorkspaceForm::default(),
            first_session_title: String::new(),
            start_link: String::new(),
            start_name: None,
            start_focused: false,
            actions,
            updates,
            tag: format!("ui-{:08x}", rand::random::<u32>()),
            sent: 0,
        }
    }

    /// Reads (and from now on keeps) this window's preferences in `path`, and applies them.
    pub fn use_prefs(&mut self, path: std::path::PathBuf, ctx: &egui::Context) {
        match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str(&text) {
                Ok(p) => self.prefs = p,
                Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot read {}: {e}", path.display()),
        }
        self.prefs_path = Some(path);
        ctx.set_theme(self.prefs.theme.preference());
    }

    fn save_prefs(&mut self) {
        let Some(path) = &self.prefs_path else { return };
        let text = serde_json::to_string_pretty(&self.prefs).expect("prefs serialise");
        if let Err(e) = std::fs::write(path, text) {
            self.model.error(format!("cannot keep the window settings in {}: {e}", path.display()), wall_ms());
        }
    }

    /// Applies every pending update; follow-ups (rejoins) become actions.
    pub fn pump(&mut self) {
        while let Ok(update) = self.updates.try_recv() {
            // A link just minted (`host --mint`, Mint, Rotate) is shown where people look.
            if matches!(update, Update::Minted(_)) {
                self.invite_open = true;
                // The label named the link just made; the next one starts blank.
                self.mint.label.clear();
            }
            // A workspace added from this window: show its agent as the host resolved it.
            if matches!(update, Update::WorkspaceAdded(_)) {
                self.send(Action::LoadWorkspaceAgents);
            }
            // Someone waiting with a share this window does not know yet (minted elsewhere, e.g.
            // `roundtable share mint`): fetch the list so the lobby can name it.
            if let Update::Event(frame) = &update {
                // Someone came in: the invite box folds away to give the conversation room
                // ("Invite people" opens it again, link included).
                if matches!(&frame.body, Event::ParticipantJoined(r) if r.role != Role::Host) {
                    self.invite_open = false;
                }
                if let Event::Lobby(l) = &frame.body {
                    if self.model.is_host && !self.model.shares.iter().any(|s| s.share_id == l.share_id) {
                        self.send(Action::RefreshShares);
                    }
                }
            }
            self.composer_answer(&update);
            self.model.apply(update);
        }
        // Ticked by default: the only workspace, or else the one of the session shown.
        let known: Vec<WorkspaceId> = self.model.workspaces.iter().map(|w| w.id.clone()).collect();
        let shown = self.model.current_session().and_then(|s| s.info.as_ref()).map(|i| i.workspace_id.clone());
        for w in &known {
            let tick = known.len() == 1 || shown.as_ref() == Some(w);
            self.mint.workspaces.entry(w.clone()).or_insert(tick);
        }
    }

    /// The host's answer to a message sent from the composer: accepted, the typed text (and the
    /// quotes that went with it) leave the composer; refused, the text stays — or comes back,
    /// for a message resent after a reconnect.
    fn composer_answer(&mut self, update: &Update) {
        match update {
            Update::Sent { client_msg_id } => {
                if let Some((_, typed, room)) = self.sending.take_if(|(id, _, _)| id == client_msg_id) {
                    // Whatever was typed after pressing Send stays (and text edited since, too).
                    if let Some(rest) = self.composer.strip_prefix(typed.as_str()) {
                        self.composer = rest.trim_start().to_string();
                    }
                    if !room {
                        // The quotes went with the prompt.
                        self.quoted.clear();
                    }
                }
            }
            Update::SendFailed { client_msg_id, text, .. } => {
                // Ours: the text never left the composer.
                let ours = self.sending.take_if(|(id, _, _)| id == client_msg_id).is_some();
                if !ours && !self.composer.contains(text.as_str()) {
                    self.composer = if self.composer.trim().is_empty() {
                        text.clone()
                    } else {
                        format!("{text}\n{}", self.composer)
                    };
                }
            }
            _ => {}
        }
    }

    fn send(&self, action: Action) {
        if self.actions.send(action).is_err() {
            tracing::debug!("the backend is gone; action dropped");
        }
    }

    fn call(&self, method: Method) {
        self.send(Action::Call(method));
    }

    /// Draws the whole window into `ui`.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        if self.model.start_open() {
            egui::CentralPanel::default_margins().show(ui, |ui| {
                egui::ScrollArea::vertical().id_salt("start_scroll").show(ui, |ui| self.start_screen(ui));
            });
            return;
        }
        // Narrow windows fold the side panels away when they become narrow; buttons in the top
        // bar open them again.
        let narrow = ui.available_width() < NARROW_WIDTH;
        if self.narrow != Some(narrow) {
            self.show_sessions = !narrow;
            self.show_people = !narrow;
            self.narrow = Some(narrow);
        }
        // What you see in the chat tab of a window in front of you counts as read (before the
        // sessions list counts unread messages).
        let seen = self.tab == Tab::Chat && ui.ctx().input(|i| i.viewport().focused).unwrap_or(true);
        self.model.looking(seen);
        egui::Panel::top("top").show(ui, |ui| self.top_bar(ui));
        let side = if narrow { 180.0 } else { 240.0 };
        if self.show_sessions {
            egui::Panel::left("sessions").default_size(side).min_size(160.0).show(ui, |ui| {
                egui::ScrollArea::vertical().id_salt("sessions_scroll").show(ui, |ui| {
                    self.sessions_panel(ui);
                    if self.model.is_host {
                        self.lobby_panel(ui);
                    }
                });
            });
        }
        if self.show_people {
            egui::Panel::right("roster").default_size(side).min_size(160.0).show(ui, |ui| {
                egui::ScrollArea::vertical().id_salt("roster_scroll").show(ui, |ui| self.roster_panel(ui));
            });
        }
        egui::CentralPanel::default_margins().show(ui, |ui| match self.tab {
            Tab::Chat => self.chat(ui),
            Tab::Shares => self.shares(ui),
            Tab::Settings => self.settings(ui),
            Tab::Audit => self.audit(ui),
        });
        self.file_window(ui);
        let now = wall_ms();
        if seen {
            if let Some(method) = self.model.mark_read_call(now) {
                self.call(method);
            }
        }
        // Countdowns tick, "is typing…" goes away, and a held-back read marker is sent, without
        // any update arriving.
        let counting = self
            .model
            .sessions
            .values()
            .flat_map(|s| s.votes.values())
            .any(|c| c.is_open() && c.closes_at_local_ms.is_some());
        let waiting = self
            .model
            .current_session()
            .is_some_and(|s| s.typing_text(now).is_some() || (seen && s.loaded && s.last_seq > s.read_seq));
        if counting || waiting {
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(500));
        }
    }

    /// The start screen of a remote window opened without a link: paste the link (and give a
    /// name), Connect; below, the hosts found on the LAN, the host of the pasted link marked.
    fn start_screen(&mut self, ui: &mut egui::Ui) {
        let Some(start) = self.model.start.clone() else { return };
        let now = wall_ms();
        let error = ui.visuals().error_fg_color;
        ui.add_space(8.0);
        ui.heading("Join a roundtable");
        ui.label("Paste the link the host sent you (it starts with roundtable://).");
        ui.add_space(8.0);
        let field = ui.label(RichText::new("Link you were sent").strong());
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut self.start_link)
                    .hint_text("roundtable://HOST:PORT/TOKEN#sha256=FINGERPRINT")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(field.id);
        // The link is what the screen is for: typing goes there at once.
        if !std::mem::replace(&mut self.start_focused, true) {
            edit.request_focus();
        }
        let parsed = link_field(&self.start_link);
        match &parsed {
            Some(Err(e)) => {
                ui.label(RichText::new(format!("Not a link roundtable can use: {e}")).color(error));
            }
            Some(Ok(link)) => {
                ui.label(
                    RichText::new(format!(
                        "Host {}{}",
                        link.authority(),
                        match &link.fingerprint {
                            Some(fp) => format!(", certificate sha256={}…", &fp[..16.min(fp.len())]),
                            None => " (plain ws://, this machine only)".into(),
                        }
                    ))
                    .weak(),
                );
            }
            None => {}
        }
        let name = self.start_name.get_or_insert_with(|| start.name.clone());
        if start.ask_name {
            ui.add_space(6.0);
            let label = ui.label(RichText::new("Your name").strong());
            ui.add(egui::TextEdit::singleline(name).hint_text("how the others see you").desired_width(240.0))
                .labelled_by(label.id);
        }
        let name = name.trim().to_string();
        let link = parsed.and_then(Result::ok);
        ui.add_space(6.0);
        let ready = link.is_some() && !name.is_empty();
        let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        let clicked = ui.add_enabled(ready, egui::Button::new("Connect")).clicked() || (enter && ready);
        if let (true, Some(link)) = (clicked, link.clone()) {
            self.model.connecting_with(&link);
            self.send(Action::Connect { link, name });
        }
        if let Some(why) = &start.failed {
            ui.label(RichText::new(format!("Could not connect: {why}")).color(error));
        }
        ui.add_space(16.0);
        ui.separator();
        ui.heading("Nearby hosts");
        ui.label(
            "Hosts listening on your network, found by mDNS. Joining still needs the link \
             from the host: its token is what lets you in. The list only helps you find the host, and lets \
             this window reach your link's host at another address when the link's own does not answer.",
        );
        ui.add_space(6.0);
        let rows = self.model.nearby_rows(link.as_ref(), now);
        if rows.is_empty() {
            let text = match &start.nearby_error {
                Some(why) => format!("Cannot look for hosts on the LAN: {why}"),
                None => "Looking… none found yet. mDNS does not cross routers, and a host started with \
                         --no-mdns is not listed."
                    .into(),
            };
            ui.label(RichText::new(text).weak());
        }
        for row in rows {
            egui::Frame::group(ui.style()).show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.horizontal_wrapped(|ui| {
                    ui.label(&row.text);
                    ui.label(RichText::new(&row.seen).weak());
                });
                if let Some(mark) = &row.of_link {
                    ui.label(RichText::new(mark).strong().color(good_colour(ui)));
                }
            });
        }
        // "seen N s ago" moves on by itself.
        ui.ctx().request_repaint_after(std::time::Duration::from_secs(1));
    }

    /// The file opened from a plan card, in its own scrollable window.
    fn file_window(&mut self, ui: &mut egui::Ui) {
        let Some(view) = &self.model.file_view else { return };
        let mut open = true;
        let mut close = false;
        egui::Window::new(format!("File: {}", view.path))
            .open(&mut open)
            .default_size([640.0, 480.0])
            .resizable(true)
            .show(ui.ctx(), |ui| {
                match &view.result {
                    Ok(file) => {
                        ui.label(RichText::new(format!("{} — {} bytes", file.path, file.size)).weak());
                        egui::ScrollArea::both().id_salt("file_scroll").max_height(420.0).show(ui, |ui| {
                            ui.label(RichText::new(&file.content).monospace());
                        });
                    }
                    Err(why) => {
                        ui.label(
                            RichText::new(format!("Cannot show {}: {why}", view.path))
                                .color(ui.visuals().error_fg_color)
                                .strong(),
                        );
                    }
                }
                if ui.button("Close file").clicked() {
                    close = true;
                }
            });
        if !open || close {
            self.model.file_view = None;
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let who = if self.model.is_host { "host".to_string() } else { "remote".to_string() };
            ui.heading(format!("roundtable — {who}"));
            ui.separator();
            let warn = ui.visuals().warn_fg_color;
            let (text, color) = match &self.model.connection {
                ConnectionState::Connecting => ("connecting…".to_string(), warn),
                ConnectionState::Connected => match &self.model.route {
                    Some(route) if !self.model.is_host => (format!("connected — {route}"), good_colour(ui)),
                    _ => ("connected".to_string(), good_colour(ui)),
                },
                ConnectionState::Lobby => ("waiting in the lobby for the host".to_string(), warn),
                ConnectionState::Reconnecting => match &self.model.disconnect_reason {
                    Some(why) => (format!("reconnecting… ({why})"), warn),
                    None => ("reconnecting…".to_string(), warn),
                },
                ConnectionState::Closed(why) => (why.clone(), ui.visuals().error_fg_color),
            };
            ui.label(RichText::new(text).color(color));
            ui.separator();
            if self.narrow == Some(true) {
                ui.toggle_value(&mut self.show_sessions, "Sessions list")
                    .on_hover_text("Show or hide the sessions (and the lobby)");
                ui.toggle_value(&mut self.show_people, "People").on_hover_text("Show or hide who is here");
                ui.separator();
            }
            ui.selectable_value(&mut self.tab, Tab::Chat, "Chat");
            if self.model.is_host && ui.selectable_value(&mut self.tab, Tab::Shares, "Shares").clicked() {
                self.send(Action::RefreshShares);
            }
            ui.selectable_value(&mut self.tab, Tab::Settings, "Settings");
            if self.model.is_host && ui.selectable_value(&mut self.tab, Tab::Audit, "Audit log").clicked() {
                self.send(Action::LoadAudit);
            }
        });
        if let Some(failing) = self.model.storage_failing.clone() {
            ui.horizontal(|ui| {
                ui.label(RichText::new(failing).strong().color(Color32::WHITE).background_color(Color32::DARK_RED));
            });
        }
        // One line, always there, so a notice coming or going never moves the layout.
        let notice = self.model.status.clone().filter(|n| n.shown(wall_ms()));
        ui.horizontal(|ui| {
            ui.set_min_height(20.0);
            match &notice {
                Some(n) if n.error => {
                    ui.label(RichText::new(&n.text).color(ui.visuals().error_fg_color));
                    if ui.small_button("Dismiss").clicked() {
                        self.model.status = None;
                    }
                }
                Some(n) => {
                    ui.label(RichText::new(&n.text).color(ui.visuals().weak_text_color()));
                    ui.ctx().request_repaint_after(std::time::Duration::from_millis(500));
                }
                None => {}
            }
        });
    }

    fn sessions_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Sessions");
        if self.model.is_host {
            self.first_session_offer(ui);
        }
        let mut switch: Option<SessionId> = None;
        let mut create: Option<(WorkspaceId, String)> = None;
        let groups: Vec<SessionGroup> = self
            .model
            .sessions_by_workspace()
            .into_iter()
            .map(|(w, name, sessions)| {
                let rows = sessions
                    .into_iter()
                    .filter_map(|s| s.info.as_ref().map(|i| (s, i)))
                    .map(|(s, i)| {
                        let status = match i.status {
                            SessionStatus::Idle => "idle",
                            SessionStatus::Running => "running",
                            SessionStatus::AwaitingVote => "awaiting vote",
                        };
                        let unread = match s.unread(self.model.me.as_ref()) {
                            Some(0) => String::new(),
                            Some(n) => format!(" · {n} unread"),
                            None => " · new activity".into(),
                        };
                        (i.id.clone(), format!("{} — {status}, {} present{unread}", i.title, i.participant_count))
                    })
                    .collect();
                (w, name, rows)
            })
            .collect();
        for (workspace, name, rows) in groups {
            ui.add_space(4.0);
            ui.label(RichText::new(format!("Workspace: {name}")).strong());
            if let Some(agent) = self.model.workspace_agents.get(&workspace) {
                ui.label(RichText::new(format!("agent: {agent}")).small().weak());
            }
            for (id, text) in rows {
                let selected = self.model.current.as_ref() == Some(&id);
                if ui.selectable_label(selected, text).clicked() && !selected {
                    switch = Some(id);
                }
            }
            if self.model.is_host {
                ui.horizontal(|ui| {
                    let title = self.new_titles.entry(workspace.clone()).or_default();
                    ui.add(egui::TextEdit::singleline(title).hint_text("new session title").desired_width(130.0));
                    if ui.small_button("New session").clicked() {
                        create = Some((workspace.clone(), std::mem::take(title)));
                    }
                });
            }
        }
        if let Some(id) = switch {
            let followed = self.model.sessions.get(&id).is_some_and(|s| s.loaded);
            if !followed {
                self.send(Action::Join(id.clone()));
            }
            self.model.open(id);
            self.quoted.clear();
            self.tab = Tab::Chat;
        }
        if let Some((workspace_id, title)) = create {
            self.call(Method::CreateSession(CreateSessionParams {
                workspace_id,
                title,
                vote_deadline_ms: None,
                plan_first: None,
            }));
        }
        if self.model.is_host {
            ui.add_space(8.0);
            if !self.workspace_form_open {
                if ui.button("Add workspace…").clicked() {
                    self.workspace_form_open = true;
                }
            } else {
                self.workspace_form(ui);
            }
        }
    }

    /// After a workspace was added here: offer to create its first session.
    fn first_session_offer(&mut self, ui: &mut egui::Ui) {
        let Some(workspace) = self.model.added_workspace.clone() else { return };
        let mut create = false;
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.label(RichText::new(format!("Workspace {} added.", workspace.name)).strong());
            ui.label("Create its first session:");
            ui.add(
                egui::TextEdit::singleline(&mut self.first_session_title)
                    .hint_text("first session title")
                    .desired_width(180.0),
            );
            ui.horizontal(|ui| {
                if ui.button("Create first session").clicked() {
                    create = true;
                }
                if ui.button("Not now").clicked() {
                    self.model.added_workspace = None;
                }
            });
        });
        if create {
            let title = std::mem::take(&mut self.first_session_title);
            self.model.added_workspace = None;
            self.call(Method::CreateSession(CreateSessionParams {
                workspace_id: workspace.id,
                title,
                vote_deadline_ms: None,
                plan_first: None,
            }));
        }
    }

    fn workspace_form(&mut self, ui: &mut egui::Ui) {
        let mut send: Option<AddWorkspaceParams> = None;
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.label(RichText::new("Add a workspace").strong());
            let form = &mut self.workspace_form;
            ui.add(egui::TextEdit::singleline(&mut form.name).hint_text("name").desired_width(200.0));
            ui.add(
                egui::TextEdit::singleline(&mut form.dir).hint_text("directory on this computer").desired_width(200.0),
            );
            ui.horizontal(|ui| {
                ui.label("Agent:");
                ui.radio_value(&mut form.agent, AgentChoice::Demo, "demo");
                ui.radio_value(&mut form.agent, AgentChoice::Claude, "claude");
                ui.radio_value(&mut form.agent, AgentChoice::Codex, "codex");
                ui.radio_value(&mut form.agent, AgentChoice::Command, "command");
            });
            if form.agent != AgentChoice::Demo {
                let hint = match form.agent {
                    AgentChoice::Command => "command path (required)",
                    AgentChoice::Codex => "codex binary (optional)",
                    _ => "claude binary (optional)",
                };
                ui.add(egui::TextEdit::singleline(&mut form.command).hint_text(hint).desired_width(200.0));
            }
            if matches!(form.agent, AgentChoice::Claude | AgentChoice::Codex) {
                ui.checkbox(&mut form.plan_first, "Plan first").on_hover_text(
                    "Every turn starts in plan mode: the agent's plan goes to a vote before it changes anything",
                );
            }
            let params = form.params();
            ui.horizontal(|ui| {
                if ui.add_enabled(params.is_ok(), egui::Button::new("Add")).clicked() {
                    send = params.clone().ok();
                }
                if ui.button("Cancel").clicked() {
                    self.workspace_form_open = false;
                }
            });
            if let Err(why) = &params {
                ui.label(RichText::new(*why).weak());
            }
        });
        if let Some(params) = send {
            self.workspace_form = WorkspaceForm::default();
            self.workspace_form_open = false;
            self.call(Method::AddWorkspace(params));
        }
    }

    /// The current session's title, with the host's Rename / Clear / Fork controls.
    fn session_header(&mut self, ui: &mut egui::Ui, session_id: &SessionId, title: &str) {
        if !self.model.is_host {
            ui.heading(title);
            return;
        }
        let mut act: Option<Method> = None;
        let renaming = self.renaming.as_ref().is_some_and(|(s, _)| s == session_id);
        if renaming {
            ui.horizontal(|ui| {
                let (_, text) = self.renaming.as_mut().expect("renaming");
                let edit = ui.add(egui::TextEdit::singleline(text).hint_text("new title").desired_width(300.0));
                if std::mem::take(&mut self.rename_focus) {
                    edit.request_focus();
                }
                let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if ui.button("Save title").clicked() || enter {
                    let title = text.trim().to_string();
                    if !title.is_empty() {
                        act =
                            Some(Method::RenameSession(RenameSessionParams { session_id: session_id.clone(), title }));
                    }
                    self.renaming = None;
                } else if ui.button("Cancel rename").clicked() {
                    self.renaming = None;
                }
            });
        } else {
            ui.horizontal(|ui| {
                ui.heading(title);
                if ui.small_button("Rename").clicked() {
                    self.renaming = Some((session_id.clone(), title.to_string()));
                    self.rename_focus = true;
                }
                if ui
                    .small_button("Clear")
                    .on_hover_text("delete every message, for everyone, and start the agent on a new conversation")
                    .clicked()
                {
                    self.confirm_clear = Some(session_id.clone());
                }
                if ui.small_button("Fork").on_hover_text("copy the messages into a new session").clicked() {
                    act = Some(Method::ForkSession(ForkSessionParams { session_id: session_id.clone(), title: None }));
                }
            });
        }
        if self.confirm_clear.as_ref() == Some(session_id) {
            ui.horizontal(|ui| {
                ui.label(
                    RichText::new(format!("Delete every message of \"{title}\" for everyone, and start the agent on a new conversation? This cannot be undone."))
                        .color(ui.visuals().error_fg_color),
                );
                if ui.button("Yes, clear").clicked() {
                    act = Some(Method::ClearSession(SessionRef { session_id: session_id.clone() }));
                    self.confirm_clear = None;
                }
                if ui.button("Keep messages").clicked() {
                    self.confirm_clear = None;
                }
            });
        }
        if let Some(m) = act {
            self.call(m);
        }
    }

    /// "Agent: model haiku" with a way to choose the model (kept for every turn, shown to all).
    fn agent_settings_row(&mut self, ui: &mut egui::Ui, session_id: &SessionId, settings: &AgentSettings) {
        let mut act: Option<Method> = None;
        ui.horizontal(|ui| {
            let now = crate::app::render::agent_settings_text(settings);
            ui.label(RichText::new(format!("Agent: {now}")).weak())
                .on_hover_text("kept by the host and used for every turn of this session");
            match self.model_edit.as_mut().filter(|(s, _)| s == session_id) {
                Some((_, text)) => {
                    let edit =
                        ui.add(egui::TextEdit::singleline(text).hint_text("model, e.g. sonnet").desired_width(160.0));
                    let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                    if ui.small_button("Use model").clicked() || enter {
                        let model = Some(text.trim().to_string());
                        let params =
                            SetAgentSettingsParams { session_id: session_id.clone(), model, permission_mode: None };
                        act = Some(Method::SetAgentSettings(params));
                        self.model_edit = None;
                    } else if ui.small_button("Cancel").clicked() {
                        self.model_edit = None;
                    }
                }
                None => {
                    if ui.small_button("Model…").on_hover_text("choose the agent's model for this session").clicked()
                    {
                        self.model_edit = Some((session_id.clone(), settings.model.clone().unwrap_or_default()));
                    }
                }
            }
        });
        if let Some(m) = act {
            self.call(m);
        }
    }

    fn lobby_panel(&mut self, ui: &mut egui::Ui) {
        ui.add_space(8.0);
        ui.separator();
        ui.heading("Lobby");
        if self.model.lobby.is_empty() {
            ui.label(RichText::new("nobody is waiting").weak());
        }
        let mut act: Option<Method> = None;
        for entry in self.model.lobby.values() {
            // The name wraps and the buttons go below it: a long share label must not widen the
            // panel (it used to, to 282 px for good, cutting the Shares table off).
            ui.add(egui::Label::new(format!(
                "{} (via {})",
                entry.display_name,
                self.model.share_name(&entry.share_id)
            )))
            .on_hover_text(format!("{}, share {}", entry.participant_id, entry.share_id));
            ui.horizontal(|ui| {
                let who = ParticipantRef { participant_id: entry.participant_id.clone() };
                if ui.button("Admit").clicked() {
                    act = Some(Method::Admit(who.clone()));
                }
                if ui.button("Refuse").clicked() {
                    act = Some(Method::Refuse(who));
                }
            });
        }
        if let Some(m) = act {
            self.call(m);
        }
    }

    fn roster_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("People");
        let Some(session) = self.model.current_session() else {
            ui.label(RichText::new("no session").weak());
            return;
        };
        let mut act: Option<Method> = None;
        let mut confirm: Option<Option<(ParticipantId, bool)>> = None;
        let colours = session.colour_slots(PALETTE.len());
        for r in session.roster.values() {
            ui.horizontal_wrapped(|ui| {
                author_chip(ui, &r.display_name, chip_colour(&colours, r.participant_id.as_str()))
                    .on_hover_text(r.participant_id.to_string());
                // Who they are, once: "(you, host)", not "Host (you) host" in tiny badges.
                let mut about = Vec::new();
                if self.model.is_me(r.participant_id.as_str()) {
                    about.push("you");
                }
                if r.role == Role::Host && !r.display_name.eq_ignore_ascii_case("host") {
                    about.push("host");
                }
                if r.role == Role::Observer {
                    about.push("observer");
                }
                if !about.is_empty() {
                    ui.label(format!("({})", about.join(", ")));
                }
                // What is going on with them, at the text size people read.
                if r.muted {
                    ui.label(RichText::new("muted").color(ui.visuals().error_fg_color));
                }
                match r.presence {
                    PresenceState::Reconnecting => {
                        ui.label(RichText::new("reconnecting…").color(ui.visuals().warn_fg_color));
                    }
                    PresenceState::Gone => {
                        ui.label(RichText::new("gone").weak());
                    }
                    PresenceState::Connected => {}
                }
                if session.holder() == Some(&r.participant_id) {
                    ui.label(RichText::new("has the turn").strong().color(good_colour(ui)));
                }
            });
            if self.model.is_host && r.role != Role::Host {
                let who = r.participant_id.clone();
                match &self.confirm_kick {
                    Some((p, revoke)) if *p == who => {
                        let question = if *revoke {
                            format!(
                                "Kick {} and revoke their link? Everyone who has that link loses it.",
                                r.display_name
                            )
                        } else {
                            format!("Kick {}? Their link still works.", r.display_name)
                        };
                        ui.label(RichText::new(question).color(ui.visuals().warn_fg_color));
                        ui.horizontal(|ui| {
                            if ui.small_button("Yes, kick").clicked() {
                                act = Some(Method::Kick(KickParams {
                                    participant_id: who.clone(),
                                    revoke_share: *revoke,
                                }));
                                confirm = Some(None);
                            }
                            if ui.small_button("Keep them").clicked() {
                                confirm = Some(None);
                            }
                        });
                    }
                    _ => {
                        ui.horizontal(|ui| {
                            if ui.small_button(if r.muted { "Unmute" } else { "Mute" }).clicked() {
                                act = Some(Method::Mute(MuteParams { participant_id: who.clone(), muted: !r.muted }));
                            }
                            if ui.small_button("Kick").on_hover_text("Disconnect now; their link still works").clicked() {
                                confirm = Some(Some((who.clone(), false)));
                            }
                            if ui
                                .small_button("Kick and revoke link")
                                .on_hover_text("Disconnect now and revoke the share they came with: its link stops working for everyone who has it")
                                .clicked()
                            {
                                confirm = Some(Some((who.clone(), true)));
                            }
                        });
                    }
                }
            }
            ui.add_space(2.0);
        }
        if let Some(c) = confirm {
            self.confirm_kick = c;
        }
        if let Some(m) = act {
            self.call(m);
        }
    }

    fn chat(&mut self, ui: &mut egui::Ui) {
        let Some(session_id) = self.model.current.clone() else {
            match &self.model.connection {
                ConnectionState::Lobby => {
                    ui.label("You are in the lobby. The host will let you in.");
                }
                // Over for good (refused at the lobby, kicked, the link revoked): say so where the
                // chat would be, not "No session yet."
                ConnectionState::Closed(why) => {
                    ui.add_space(24.0);
                    ui.label(RichText::new("You are not in any session").heading());
                    ui.label(format!("Not connected: {why}."));
                    ui.label(RichText::new("Ask the host for a new link.").weak());
                }
                ConnectionState::Connecting | ConnectionState::Reconnecting => {
                    ui.label("Connecting…");
                }
                ConnectionState::Connected => {
                    ui.label("No session yet.");
                }
            }
            return;
        };
        let Some(session) = self.model.sessions.get(&session_id) else { return };
        let plan_first = session.info.as_ref().is_some_and(|i| i.plan_first);
        let settings = session.info.as_ref().map(|i| i.agent_settings.clone()).unwrap_or_default();
        if let Some(title) = session.info.as_ref().map(|i| i.title.clone()) {
            self.session_header(ui, &session_id, &title);
        }
        if plan_first {
            ui.label(RichText::new("Plan first: the agent's plan goes to a vote before it changes anything").weak());
        }
        self.agent_settings_row(ui, &session_id, &settings);
        if self.model.is_host {
            self.invite_box(ui, &session_id);
        }
        // Composer and cards at the bottom, messages fill the rest.
        egui::Panel::bottom("composer").show(ui, |ui| {
            self.vote_cards(ui, &session_id);
            ui.add_space(4.0);
            self.composer(ui, &session_id);
        });
        let mut want_older = false;
        let mut quote: Option<(String, String)> = None;
        let session = &self.model.sessions[&session_id];
        let scroll = egui::ScrollArea::vertical()
            .id_salt("chat_scroll")
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                if !session.loaded {
                    ui.label(RichText::new("loading…").weak());
                }
                if session.loading_older {
                    ui.label(RichText::new("loading earlier messages…").weak());
                } else if session.has_older && ui.button("Load earlier messages").clicked() {
                    want_older = true;
                }
                let first_new = session.first_new(self.model.me.as_ref());
                let colours = session.colour_slots(PALETTE.len());
                for entry in &session.timeline {
                    match entry {
                        Entry::Message(HistoryMessage { seq, message: m }) => {
                            if first_new == Some(*seq) {
                                ui.horizontal(|ui| {
                                    ui.label(
                                        RichText::new("— new messages —").strong().color(ui.visuals().warn_fg_color),
                                    );
                                });
                            }
                            ui.horizontal_wrapped(|ui| {
                                author_chip(ui, &m.author_name, chip_colour(&colours, &m.author_id))
                                    .on_hover_text(m.author_id.as_str());
                                if self.model.is_me(&m.author_id) {
                                    ui.label(RichText::new("(you)").weak());
                                }
                                if let Some(at) = m.at_ms {
                                    ui.label(RichText::new(crate::app::render::local_time_text(at)).small().weak())
                                        .on_hover_text(format!("{} UTC", utc_text(at)));
                                }
                                if m.room {
                                    ui.label(RichText::new("to the room").weak().italics());
                                    if ui
                                        .small_button("Quote")
                                        .on_hover_text(
                                            "Put this line, with who said it, in your next prompt to the agent",
                                        )
                                        .clicked()
                                    {
                                        quote = Some((m.author_name.clone(), m.text.clone()));
                                    }
                                }
                            });
                            if m.room {
                                ui.label(RichText::new(&m.text).italics());
                            } else {
                                // Quoted room chat ("> Ann (room chat): …" lines ahead of the
                                // prompt, as Quote writes them) is shown as quotes.
                                let (quotes, prompt) = split_quotes(&m.text);
                                for q in quotes {
                                    ui.label(RichText::new(format!("Quoting {q}")).italics().weak());
                                }
                                if !prompt.is_empty() {
                                    ui.label(prompt);
                                }
                            }
                            ui.add_space(6.0);
                        }
                        Entry::Note(text) => {
                            ui.label(RichText::new(format!("· {text}")).italics().weak());
                        }
                        Entry::Failure(text) => {
                            ui.label(
                                RichText::new(format!("Error: {text}")).strong().color(ui.visuals().error_fg_color),
                            );
                        }
                    }
                }
                if !session.streaming.is_empty() {
                    ui.horizontal(|ui| {
                        author_chip(ui, "Agent", chip_colour(&colours, AGENT_ID));
                        // The agent stops while a vote on its request is open.
                        let waiting = session.votes.values().any(|c| c.is_open());
                        ui.label(RichText::new(if waiting { "waiting for the vote…" } else { "streaming…" }).weak());
                    });
                    ui.label(&session.streaming);
                }
                if let Some(typing) = session.typing_text(wall_ms()) {
                    ui.label(RichText::new(typing).weak().italics());
                }
            });
        if let Some(line) = quote {
            if !self.quoted.contains(&line) {
                self.quoted.push(line);
            }
            self.to_room = false;
            // The prompt the quote goes into is what comes next.
            self.composer_focus = true;
        }
        // Scrolling up to the top of a long conversation loads the page before it.
        let at_top = scroll.state.clamped_offset().y <= 0.0 && scroll.content_size.y > scroll.inner_rect.height();
        if want_older || (at_top && session.has_older) {
            if let Some(method) = self.model.request_older(&session_id) {
                self.call(method);
            }
        }
    }

    /// The composer: to the agent (a prompt, which takes the turn) or to the room (people only).
    /// While a turn runs — someone else's, or your own while the agent works on your prompt — it
    /// offers the room instead of going away; observers, muted people and a window offline get
    /// only the reason. The text stays in the composer until the host accepts it.
    fn composer(&mut self, ui: &mut egui::Ui, session_id: &SessionId) {
        let lock = self.model.composer_lock();
        let can_cancel = self.model.can_cancel();
        let turn_runs = matches!(lock, Some(ComposerLock::WaitingFor(_) | ComposerLock::OwnTurn));
        if !self.quoted.is_empty() && lock.is_none() && !self.to_room {
            let mut clear = false;
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new("Quoted in your next prompt:").weak());
                for (who, line) in &self.quoted {
                    ui.label(RichText::new(format!("{who}: {line}")).italics());
                }
                clear = ui.small_button("Clear quotes").clicked();
            });
            if clear {
                self.quoted.clear();
            }
        }
        ui.horizontal(|ui| {
            if let Some(lock) = &lock {
                ui.label(RichText::new(lock.text()).strong());
            }
            if lock.is_none() {
                ui.selectable_value(&mut self.to_room, false, "To the agent")
                    .on_hover_text("A prompt: it takes the turn and the agent works on it");
                ui.selectable_value(&mut self.to_room, true, "To the room")
                    .on_hover_text("Room chat: the people in this session read it; the agent never does");
            }
            if lock.is_none() || turn_runs {
                let room = turn_runs || self.to_room;
                let hint =
                    if room { "Message to the room (not the agent)" } else { "Message to the agent (starts a turn)" };
                let edit = ui.add(
                    egui::TextEdit::singleline(&mut self.composer)
                        .hint_text(hint)
                        .desired_width((ui.available_width() - 170.0).max(120.0)),
                );
                if std::mem::take(&mut self.composer_focus) {
                    edit.request_focus();
                }
                if edit.changed() && !self.composer.trim().is_empty() {
                    if let Some(method) = self.model.typing_call(wall_ms()) {
                        self.call(method);
                    }
                }
                let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                // One message at a time: the next waits for the host's answer to this one.
                let idle = self.sending.is_none();
                let send = ui.add_enabled(idle, egui::Button::new(if idle { "Send" } else { "Sending…" })).clicked();
                if (send || (enter && idle)) && !self.composer.trim().is_empty() {
                    self.sent += 1;
                    let typed = self.composer.clone();
                    let text = if room { typed.clone() } else { crate::app::join::quote_into(&self.quoted, &typed) };
                    let client_msg_id = format!("{}-{}", self.tag, self.sent);
                    let params = SendMessageParams { session_id: session_id.clone(), text, client_msg_id };
                    self.sending = Some((params.client_msg_id.clone(), typed, room));
                    self.call(if room { Method::SendChat(params) } else { Method::SendMessage(params) });
                    edit.request_focus();
                }
            }
            if can_cancel && ui.button("Cancel turn").clicked() {
                self.call(Method::CancelTurn(SessionRef { session_id: session_id.clone() }));
            }
        });
    }

    /// "Invite people": mint a link for this session's workspace, copy it, and the exact
    /// commands the other person runs — without leaving the chat.
    fn invite_box(&mut self, ui: &mut egui::Ui, session_id: &SessionId) {
        let workspace =
            self.model.sessions.get(session_id).and_then(|s| s.info.as_ref()).map(|i| i.workspace_id.clone());
        let Some(workspace) = workspace else { return };
        let minted = self.model.minted.clone().filter(|m| m.share.workspaces.contains(&workspace) && !m.share.revoked);
        ui.horizontal(|ui| {
            let label = if self.invite_open { "Hide invite" } else { "Invite people" };
            if ui.button(label).on_hover_text("A share link for this session's workspace").clicked() {
                self.invite_open = !self.invite_open;
            }
        });
        if !self.invite_open {
            return;
        }
        let mut mint = false;
        let mut copy: Option<(String, &'static str)> = None;
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.set_width(ui.available_width());
            let Some(m) = &minted else {
                ui.label(format!(
                    "A new link to \"{}\": collaborative, with consensus on plans. More choices on the Shares tab.",
                    self.model.workspace_name(&workspace)
                ));
                mint = ui.button("Create invite link").clicked();
                return;
            };
            let link = m.link.clone().unwrap_or_else(|| m.token.clone());
            ui.label(RichText::new("Share link (shown once — send it to the people you invite):").strong());
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(&link).monospace());
                if ui.button("Copy link").clicked() {
                    copy = Some((link.clone(), "link copied"));
                }
            });
            let window = format!("roundtable connect '{link}' --name THEIR_NAME");
            let terminal = format!("ROUNDTABLE_LINK='{link}' roundtable join --name THEIR_NAME");
            let install = crate::app::install::install_one_liner();
            let windows = crate::app::install::install_one_liner_windows();
            let rows = [
                ("They run, for a window:", &window, "Copy command", "command copied"),
                ("or in a terminal (the link stays out of `ps`):", &terminal, "Copy join command", "command copied"),
                (
                    "Not installed yet? One line installs it (Linux, macOS):",
                    &install,
                    "Copy install command",
                    "install command copied",
                ),
                ("on Windows (PowerShell):", &windows, "Copy Windows install command", "install command copied"),
            ];
            for (intro, command, button, note) in rows {
                ui.label(intro);
                ui.horizontal_wrapped(|ui| {
                    ui.label(RichText::new(command).monospace());
                    if ui.small_button(button).clicked() {
                        copy = Some((command.clone(), note));
                    }
                });
            }
        });
        if let Some((text, note)) = copy {
            ui.ctx().copy_text(text);
            self.model.notice(format!("{note} to the clipboard"), wall_ms());
        }
        if mint {
            let title = self.model.sessions[session_id].info.as_ref().map_or("", |i| i.title.as_str());
            self.call(Method::MintShare(MintShareParams::team(format!("invite {title}"), vec![workspace])));
        }
    }

    fn vote_cards(&mut self, ui: &mut egui::Ui, session_id: &SessionId) {
        let Some(session) = self.model.sessions.get(session_id) else { return };
        // Open votes, and while the turn goes on the newest resolved one of this turn, so its
        // outcome stays visible while the agent acts on it (the timeline keeps a note of every
        // outcome; an earlier turn's card is not pinned into the next).
        let mut cards: Vec<VoteCard> = session.votes.values().filter(|c| c.is_open()).cloned().collect();
        if cards.is_empty() && session.holder().is_some() {
            let this_turn = |c: &&VoteCard| !session.votes_before_turn.contains(&c.opened.vote_id);
            if let Some(last) = session.votes.values().rev().filter(this_turn).find(|c| !c.is_open()) {
                cards.push(last.clone());
            }
        }
        let session = session.clone();
        for card in cards {
            egui::Frame::group(ui.style()).show(ui, |ui| {
                ui.set_width(ui.available_width());
                self.vote_card(ui, &session, &card);
            });
        }
    }

    fn vote_card(&mut self, ui: &mut egui::Ui, session: &SessionState, card: &VoteCard) {
        let id = card.opened.vote_id.clone();
        // The same words as `join`'s, from the vote's real state.
        let words = session.vote_words(card);
        let decided = match &card.resolved {
            Some(r) => outcome_text(r.outcome).to_string(),
            None => words.deciders.clone(),
        };
        match &card.opened.subject {
            VoteSubject::Plan { plan, on_approval } => {
                ui.label(RichText::new(format!("Plan ({id}) — {decided}")).strong());
                ui.label(plan);
                if let Some(note) = on_approval {
                    ui.label(RichText::new(note).italics());
                }
                let files = file_refs(plan);
                if !files.is_empty() {
                    let mut view: Option<String> = None;
                    ui.horizontal_wrapped(|ui| {
                        ui.label(RichText::new("Files:").weak());
                        for f in files {
                            if ui.small_button(format!("View {f}")).clicked() {
                                view = Some(f);
                            }
                        }
                    });
                    if let (Some(path), Some(session_id)) = (view, session.info.as_ref().map(|i| i.id.clone())) {
                        self.call(Method::ReadWorkspaceFile(ReadFileParams { session_id, path }));
                    }
                }
            }
            VoteSubject::Tool { tool, input } => {
                ui.label(RichText::new(format!("Tool use ({id}): {tool} — {decided}")).strong());
                ui.label(RichText::new(input).monospace());
            }
            VoteSubject::Question { questions } => {
                ui.label(RichText::new(format!("Question ({id}) — {decided}")).strong());
                for q in questions {
                    ui.label(&q.question);
                }
            }
        }
        for line in &words.ballots {
            ui.label(line);
        }
        if let Some(outcome) = &words.outcome {
            ui.label(RichText::new(format!("Resolved: {outcome}")).strong());
            return;
        }
        if let Some(text) = self.model.deadline_text(card, wall_ms()) {
            ui.label(RichText::new(text).color(ui.visuals().warn_fg_color));
        }
        if self.model.is_host && words.host_may_overrule {
            ui.label(
                RichText::new(
                    "As the host, your answer decides for everyone; the others' ballots are then not needed.",
                )
                .italics(),
            );
        }
        if !self.model.can_vote(card) {
            let me_required = self.model.me.as_ref().is_some_and(|m| card.opened.required.contains(m));
            if !me_required {
                ui.label(RichText::new("You are not a required voter of this vote.").weak());
            }
            return;
        }
        match &card.opened.subject {
            VoteSubject::Question { questions } => {
                let answers = self.answers.entry(id.clone()).or_insert_with(|| vec![String::new(); questions.len()]);
                answers.resize(questions.len(), String::new());
                // A single question of one choice is answered by clicking its option; several
                // questions (or several choices) wait for Answer.
                let single = matches!(questions.as_slice(), [q] if !q.multi_select);
                let mut picked = false;
                for (i, q) in questions.iter().enumerate() {
                    ui.horizontal_wrapped(|ui| {
                        for option in &q.options {
                            if ui.add(egui::Button::new(option).selected(answers[i] == *option)).clicked() {
                                answers[i] = option.clone();
                                picked = single;
                            }
                        }
                        ui.add(egui::TextEdit::singleline(&mut answers[i]).hint_text("answer").desired_width(160.0));
                    });
                }
                let ready = answers.iter().all(|a| !a.trim().is_empty());
                if ui.add_enabled(ready, egui::Button::new("Answer")).clicked() || picked {
                    let answers = answers.iter().map(|a| a.trim().to_string()).collect();
                    self.call(Method::AnswerQuestion(AnswerQuestionParams { vote_id: id, answers }));
                }
            }
            _ => {
                let reason = self.deny_reasons.entry(id.clone()).or_default();
                let mut vote: Option<(bool, Option<String>)> = None;
                ui.horizontal(|ui| {
                    if ui.button("Approve").clicked() {
                        vote = Some((true, None));
                    }
                    ui.add(egui::TextEdit::singleline(reason).hint_text("reason for denying").desired_width(180.0));
                    if ui.button("Deny").clicked() {
                        let r = reason.trim();
                        vote = Some((false, (!r.is_empty()).then(|| r.to_string())));
                    }
                });
                if let Some((approve, reason)) = vote {
                    self.call(Method::VotePlan(VotePlanParams { vote_id: id, approve, reason, always: false }));
                }
            }
        }
    }

    fn shares(&mut self, ui: &mut egui::Ui) {
        // Cards wrap to the width; a solid scroll bar takes its own room instead of lying over
        // the last card.
        ui.spacing_mut().scroll = egui::style::ScrollStyle::solid();
        egui::ScrollArea::vertical().id_salt("shares_scroll").auto_shrink([false, false]).show(ui, |ui| {
            ui.heading("Mint a share link");
            self.mint_form(ui);
            if let Some(minted) = self.model.minted.clone() {
                ui.add_space(6.0);
                egui::Frame::group(ui.style()).show(ui, |ui| {
                    ui.label(RichText::new(format!("Link for {} — shown once:", minted.share.share_id)).strong());
                    let link = minted.link.clone().unwrap_or_else(|| minted.token.clone());
                    ui.label(RichText::new(&link).monospace());
                    ui.horizontal(|ui| {
                        if ui.button("Copy").clicked() {
                            ui.ctx().copy_text(link.clone());
                            self.model.notice("link copied".into(), wall_ms());
                        }
                        if ui.button("Hide link").clicked() {
                            self.model.minted = None;
                        }
                    });
                    ui.label(RichText::new("They run: roundtable connect 'LINK' --name THEIR_NAME").weak());
                });
            }
            ui.add_space(10.0);
            ui.horizontal(|ui| {
                ui.heading("Shares");
                if ui.small_button("Refresh").clicked() {
                    self.send(Action::RefreshShares);
                }
            });
            self.share_list(ui);
        });
    }

    fn mint_form(&mut self, ui: &mut egui::Ui) {
        let names: BTreeMap<WorkspaceId, String> =
            self.model.workspaces.iter().map(|w| (w.id.clone(), w.name.clone())).collect();
        let form = &mut self.mint;
        ui.horizontal(|ui| {
            ui.label("Label");
            ui.text_edit_singleline(&mut form.label);
        });
        ui.horizontal_wrapped(|ui| {
            ui.label("Workspaces:");
            for (w, on) in form.workspaces.iter_mut() {
                let name = names.get(w).cloned().unwrap_or_else(|| w.to_string());
                ui.checkbox(on, name);
            }
        });
        ui.checkbox(&mut form.collaborative, "Collaborative (off: 1:1 remote control)");
        ui.checkbox(&mut form.consensus_required, "Consensus required");
        ui.checkbox(&mut form.admission_required, "Admission required (lobby)");
        ui.checkbox(&mut form.observer, "Observers only (read, no send or vote)");
        ui.horizontal(|ui| {
            ui.label("Expires after (minutes, 0 = never)");
            ui.add(egui::DragValue::new(&mut form.expires_minutes).range(0..=525_600));
        });
        ui.horizontal(|ui| {
            ui.label("Max uses (0 = unlimited)");
            ui.add(egui::DragValue::new(&mut form.max_uses).range(0..=10_000));
        });
        ui.horizontal(|ui| {
            ui.label("Vote deadline (seconds, 0 = none)");
            ui.add(egui::DragValue::new(&mut form.vote_deadline_secs).range(0..=86_400));
        });
        let params = form.params();
        let clicked = ui.add_enabled(params.is_ok(), egui::Button::new("Mint")).clicked();
        if let Err(why) = &params {
            ui.label(RichText::new(*why).weak());
        }
        if let (true, Ok(params)) = (clicked, params) {
            self.call(Method::MintShare(params));
        }
    }

    /// One card per share: what it is on the first line, its details wrapped below, its actions
    /// and their confirmation under them — nothing off to the right in a narrow window.
    fn share_list(&mut self, ui: &mut egui::Ui) {
        let mut act: Option<Method> = None;
        let mut revoke_confirm: Option<Option<crate::ids::ShareId>> = None;
        let now = wall_ms();
        for s in &self.model.shares {
            egui::Frame::group(ui.style()).show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.horizontal_wrapped(|ui| {
                    let title = if s.label.is_empty() { format!("Share {}", s.share_id) } else { s.label.clone() };
                    ui.label(RichText::new(title).strong());
                    ui.label(RichText::new(s.share_id.to_string()).weak());
                    // The host's engine clock is its wall clock, and share lists are host-only.
                    ui.label(match (s.revoked, s.expires_at.map(|at| at.saturating_sub(now))) {
                        (true, _) => "revoked".to_string(),
                        (false, Some(0)) => "expired".to_string(),
                        (false, Some(left)) => format!("expires in {}", span_text(left)),
                        (false, None) => "active".to_string(),
                    });
                });
                let scope: Vec<String> = s.workspaces.iter().map(|w| self.model.workspace_name(w)).collect();
                let ids: Vec<String> = s.workspaces.iter().map(|w| w.to_string()).collect();
                let mut settings = vec![if s.collaborative { "collaborative" } else { "1:1" }];
                if s.consensus_required {
                    settings.push("consensus");
                }
                if s.admission_required {
                    settings.push("lobby");
                }
                settings.push(s.role.as_str());
                ui.horizontal_wrapped(|ui| {
                    ui.label(scope.join(", ")).on_hover_text(ids.join(", "));
                    ui.label(RichText::new("·").weak());
                    ui.label(settings.join(", "));
                    ui.label(RichText::new("·").weak());
                    ui.label(format!("{}, {} live", uses_text(s.uses, s.max_uses), s.connections));
                });
                if s.revoked {
                    return;
                }
                let share = ShareRef { share_id: s.share_id.clone() };
                if self.confirm_revoke.as_ref() == Some(&s.share_id) {
                    let who = match s.connections {
                        0 => "nobody is connected through it now".to_string(),
                        1 => "the 1 connection through it is closed".to_string(),
                        n => format!("the {n} connections through it are closed"),
                    };
                    ui.add(egui::Label::new(
                        RichText::new(format!("Revoke this link? It stops working and {who}."))
                            .color(ui.visuals().warn_fg_color),
                    ));
                    ui.horizontal(|ui| {
                        if ui.small_button("Yes, revoke").clicked() {
                            act = Some(Method::RevokeShare(share.clone()));
                            revoke_confirm = Some(None);
                        }
                        if ui.small_button("Keep it").clicked() {
                            revoke_confirm = Some(None);
                        }
                    });
                } else {
                    ui.horizontal(|ui| {
                        if ui.small_button("Rotate").on_hover_text("new link; the old one stops working").clicked() {
                            act = Some(Method::RotateShare(share.clone()));
                        }
                        if ui.small_button("Revoke").clicked() {
                            revoke_confirm = Some(Some(s.share_id.clone()));
                        }
                    });
                }
            });
        }
        if let Some(c) = revoke_confirm {
            self.confirm_revoke = c;
        }
        if let Some(m) = act {
            self.call(m);
        }
    }

    fn settings(&mut self, ui: &mut egui::Ui) {
        ui.heading("Settings");
        ui.horizontal(|ui| {
            ui.label("Theme");
            let before = self.prefs.theme;
            ui.selectable_value(&mut self.prefs.theme, ThemeChoice::System, "Follow the system");
            ui.selectable_value(&mut self.prefs.theme, ThemeChoice::Light, "Light");
            ui.selectable_value(&mut self.prefs.theme, ThemeChoice::Dark, "Dark");
            if self.prefs.theme != before {
                ui.ctx().set_theme(self.prefs.theme.preference());
                self.save_prefs();
            }
        });
        ui.add_space(8.0);
        if self.model.is_host {
            self.host_settings(ui);
            return;
        }
        let m = &self.model;
        egui::Grid::new("settings_grid").num_columns(2).show(ui, |ui| {
            ui.label("Display name");
            ui.label(if m.my_name.is_empty() { "—".to_string() } else { m.my_name.clone() });
            ui.end_row();
            ui.label("Role");
            ui.label(m.role.map(|r| r.as_str()).unwrap_or("—"));
            ui.end_row();
            if let Some(address) = &m.settings.address {
                ui.label("Host address");
                ui.label(address);
                ui.end_row();
            }
            ui.label("Default consensus (host's own turns)");
            ui.label(match m.settings.default_consensus {
                Some(true) => "required",
                Some(false) => "not required",
                None => "set by the host",
            });
            ui.end_row();
            ui.label("Default vote deadline");
            ui.label(match (m.is_host, m.settings.vote_deadline_ms) {
                (_, Some(ms)) => format!("{} s", ms / 1000),
                (true, None) => "none".to_string(),
                (false, None) => "set by the host".to_string(),
            });
            ui.end_row();
        });
        ui.add_space(6.0);
        ui.label(RichText::new("The host sets these. Shares carry their own consensus and deadline.").weak());
    }

    /// The host's settings, editable: saved by the host (kept across restarts) and applied to
    /// running sessions at once.
    fn host_settings(&mut self, ui: &mut egui::Ui) {
        let s = &self.model.settings;
        let Some(name) = s.host_name.clone() else {
            ui.label(RichText::new("loading the host's settings…").weak());
            return;
        };
        let saved = SettingsForm {
            host_name: name,
            default_consensus: s.default_consensus.unwrap_or(true),
            deadline_secs: s.vote_deadline_ms.map_or(0, |ms| ms / 1000),
        };
        let address = s.address.clone();
        // The form follows the host's settings as they change, unless it holds unsaved edits.
        if self.settings_base.as_ref() != Some(&saved) {
            if self.settings_form.is_none() || self.settings_form == self.settings_base {
                self.settings_form = Some(saved.clone());
            }
            self.settings_base = Some(saved.clone());
        }
        let form = self.settings_form.get_or_insert_with(|| saved.clone());
        egui::Grid::new("host_settings_grid").num_columns(2).show(ui, |ui| {
            ui.label("Your display name");
            ui.add(egui::TextEdit::singleline(&mut form.host_name).desired_width(220.0));
            ui.end_row();
            ui.label("Votes in your own turns");
            ui.checkbox(&mut form.default_consensus, "need everyone's consensus")
                .on_hover_text("Off: you decide your own turns' plans and questions");
            ui.end_row();
            ui.label("Default vote deadline");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut form.deadline_secs).range(0..=86_400).suffix(" s"));
                ui.label(RichText::new("0 = none; no decision by then means denied").weak());
            });
            ui.end_row();
            if let Some(address) = &address {
                ui.label("Host address");
                ui.label(address);
                ui.end_row();
            }
        });
        let changed = *form != saved;
        let params = form.params();
        let mut save = false;
        let mut reset = false;
        ui.horizontal(|ui| {
            save = ui.add_enabled(changed && params.is_ok(), egui::Button::new("Save settings")).clicked();
            reset = ui.add_enabled(changed, egui::Button::new("Undo changes")).clicked();
            if let Err(why) = &params {
                ui.label(RichText::new(*why).color(ui.visuals().warn_fg_color));
            }
        });
        ui.label(
            RichText::new(
                "Saved on this host and used from the next vote on, in every session. A --vote-deadline given on \
                 the command line wins for that run.",
            )
            .weak(),
        );
        if reset {
            self.settings_form = Some(saved);
        } else if let (true, Ok(params)) = (save, params) {
            self.call(Method::UpdateSettings(params));
        }
    }

    fn audit(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Audit log");
            if ui.small_button("Refresh").clicked() {
                self.send(Action::LoadAudit);
            }
        });
        egui::ScrollArea::vertical().id_salt("audit_scroll").stick_to_bottom(true).show(ui, |ui| {
            egui::Grid::new("audit_grid").striped(true).num_columns(5).show(ui, |ui| {
                for h in ["time (UTC)", "who", "action", "target", "detail"] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for row in &self.model.audit {
                    ui.label(utc_text(row.at));
                    match self.model.person_name(&row.actor) {
                        Some(name) => ui.label(name).on_hover_text(row.actor.as_str()),
                        None => ui.label(&row.actor),
                    };
                    ui.label(audit_action_text(&row.action)).on_hover_text(row.action.as_str());
                    match self.model.person_name(&row.target) {
                        Some(name) => ui.label(name).on_hover_text(row.target.as_str()),
                        None => ui.label(&row.target),
                    };
                    ui.label(&row.detail);
                    ui.end_row();
                }
            });
        });
    }
}

/// A prompt's leading `> ` lines (without the `> `) and the rest of it.
fn split_quotes(text: &str) -> (Vec<&str>, &str) {
    let mut quotes = Vec::new();
    let mut rest = text;
    while let Some(line) = rest.strip_prefix("> ") {
        let (quote, tail) = line.split_once('\n').unwrap_or((line, ""));
        quotes.push(quote);
        rest = tail;
    }
    let prompt = if quotes.is_empty() { text } else { rest.trim_start_matches('\n') };
    (quotes, prompt)
}

/// A long duration in words: `3 d 4 h`, `2 h 5 min`, or a clock under an hour (`4:05`).
fn span_text(ms: u64) -> String {
    let mins = ms.div_ceil(60_000);
    match (mins / (24 * 60), mins / 60 % 24, mins % 60) {
        (0, 0, _) => clock_text(ms),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// A coloured name chip; the colour is stable per participant id.
/// Below this width (points) the side panels start folded away.
pub const NARROW_WIDTH: f32 = 1000.0;

/// Name chip colours: dark enough for white text (WCAG AA, at least 4.5:1), distinct from each
/// other, in both themes.
pub const PALETTE: [Color32; 10] = [
    Color32::from_rgb(41, 98, 200),
    Color32::from_rgb(196, 52, 40),
    Color32::from_rgb(18, 130, 70),
    Color32::from_rgb(140, 58, 170),
    Color32::from_rgb(184, 80, 16),
    Color32::from_rgb(0, 128, 150),
    Color32::from_rgb(170, 40, 110),
    Color32::from_rgb(100, 110, 20),
    Color32::from_rgb(90, 80, 200),
    Color32::from_rgb(130, 80, 40),
];

/// The agent's chip colour.
const AGENT_COLOUR: Color32 = Color32::from_rgb(90, 90, 90);

/// The chip colour of an author, from the session's [`SessionState::colour_slots`].
fn chip_colour(slots: &BTreeMap<ParticipantId, usize>, id: &str) -> Color32 {
    if id == AGENT_ID {
        return AGENT_COLOUR;
    }
    let slot = slots.get(&ParticipantId::from(id)).copied().unwrap_or_else(|| colour_slot(id, PALETTE.len()));
    PALETTE[slot % PALETTE.len()]
}

/// "Good" text (connected, has the turn), readable on the current theme.
fn good_colour(ui: &egui::Ui) -> Color32 {
    if ui.visuals().dark_mode {
        Color32::LIGHT_GREEN
    } else {
        Color32::from_rgb(0, 110, 40)
    }
}

/// A name on a coloured chip.
fn author_chip(ui: &mut egui::Ui, name: &str, colour: Color32) -> egui::Response {
    ui.label(RichText::new(format!(" {name} ")).strong().color(Color32::WHITE).background_color(colour))
}

impl eframe::App for RoundtableApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.pump();
        self.show(ui);
    }
}

/// An audit row's action in words (the stored name, e.g. `kicked_and_share_revoked`, on hover).
fn audit_action_text(action: &str) -> String {
    let words = match action {
        "authenticated" => "signed in",
        "admitted" => "admitted from the lobby",
        "refused" => "refused at the lobby",
        "kicked" => "removed",
        "kicked_and_share_revoked" => "removed, and their link revoked",
        "disconnected" => "disconnected",
        "gone" => "gone (did not come back in time)",
        "session_cleared" => "cleared the session",
        "settings_changed" => "changed settings",
        "share_minted" => "made a link",
        "share_revoked" => "revoked a link",
        "share_rotated" => "replaced a link",
        "tool_allowed" => "allowed a tool from now on",
        "turn_closed" => "ended a turn",
        "vote_opened" => "vote opened",
        "vote_resolved" => "vote decided",
        other => return other.replace('_', " "),
    };
    words.to_string()
}

/// How often a share was used: "1 use", "2 uses", "0/3 uses" (with a maximum).
fn uses_text(uses: u32, max: Option<u32>) -> String {
    match max {
        Some(m) => format!("{uses}/{m} uses"),
        None if uses == 1 => "1 use".to_string(),
        None => format!("{uses} uses"),
    }
}
