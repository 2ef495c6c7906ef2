// Who is signed in and how to sign in: the sign-in panel (#signin), the header's identity and
// buttons, the notice for a link meant for another account (?as=), and the page that hands a
// sign-in to the Buddy CLI (?cli_port=&cli_state=). app.js starts and stops the session.

import {
  EmailAuthProvider,
  GoogleAuthProvider,
  createUserWithEmailAndPassword,
  linkWithCredential,
  linkWithPopup,
  onAuthStateChanged,
  sendPasswordResetEmail,
  signInAnonymously,
  signInWithCustomToken,
  signInWithEmailAndPassword,
  signInWithPopup,
  signOut,
} from "firebase/auth";

const UID = /^[A-Za-z0-9_-]{1,128}$/;
const CLI_STATE = /^[A-Za-z0-9_-]{16,128}$/;

const ALREADY_AN_ACCOUNT =
  "That account already exists. Sign in to it instead; the missions of this anonymous " +
  "session stay with it.";
const NO_MATCH = "That email and password do not match an account. Check both and try again.";
const POPUP_CLOSED = "The sign-in window was closed before signing in finished.";
// What a person is told for each Firebase Auth error code (never Firebase's own text).
const MESSAGES = {
  "auth/wrong-password":
    "That password is not right for this email. Try again, or choose “Forgot password?”.",
  "auth/invalid-credential": NO_MATCH,
  "auth/invalid-login-credentials": NO_MATCH,
  "auth/user-not-found":
    "There is no account with this email. Choose “Create account” to make one.",
  "auth/email-already-in-use":
    "An account with this email already exists. Choose “Sign in” instead.",
  "auth/credential-already-in-use": ALREADY_AN_ACCOUNT,
  "auth/account-exists-with-different-credential":
    "An account with this email already exists with another way of signing in. Use that one.",
  "auth/weak-password": "Choose a longer password: at least 6 characters.",
  "auth/invalid-email": "That does not look like an email address.",
  "auth/missing-email": "Enter your email address.",
  "auth/missing-password": "Enter your password.",
  "auth/popup-closed-by-user": POPUP_CLOSED,
  "auth/cancelled-popup-request": POPUP_CLOSED,
  "auth/popup-blocked":
    "The browser blocked the sign-in window: allow pop-ups for this site and try again.",
  "auth/network-request-failed":
    "The sign-in service cannot be reached. Check your connection and try again.",
  "auth/too-many-requests": "Too many attempts in a row. Wait a little, then try again.",
  "auth/user-disabled": "This account has been disabled.",
  "auth/operation-not-allowed": "This way of signing in is not enabled for this project.",
  "auth/provider-already-linked": "This session already has an account of that kind.",
  "auth/requires-recent-login": "For this, sign out and sign in again first.",
};

const $ = (selector) => document.querySelector(selector);

export function messageFor(error, { upgrading = false } = {}) {
  const code = error?.code ?? "";
  if (upgrading && code === "auth/email-already-in-use") return ALREADY_AN_ACCOUNT;
  return MESSAGES[code] ?? `Signing in did not work${code ? ` (${code})` : ""}. Try again.`;
}

// What the page's URL asks for: a uid to show (from `buddy open`), a CLI waiting for a sign-in.
export function readLink(search) {
  const params = new URLSearchParams(search);
  let as = params.get("as");
  if (as !== null && !UID.test(as)) {
    console.warn("?as= is ignored: it is not a uid");
    as = null;
  }
  if (!params.has("cli_port") && !params.has("cli_state")) return { as, cli: null };
  const port = params.get("cli_port") ?? "";
  const state = params.get("cli_state") ?? "";
  const valid = /^\d{4,5}$/.test(port) && +port >= 1024 && +port <= 65535 && CLI_STATE.test(state);
  return { as, cli: valid ? { port: +port, state } : { malformed: true } };
}

// Watches who is signed in and calls onSignedIn(user) / onSignedOut() on each change. On the
// first answer it may sign in first: as ?as= asks (emulators only), or as the local user.
export function watchSignIn({ auth, config, onSignedIn, onSignedOut }) {
  const link = readLink(location.search);
  const localUid = config.localUser?.uid ?? null;
  let first = true;
  let upgrading = false; // the panel is open for an anonymous user to keep their missions

  const fakeToken = (uid) => JSON.stringify({ uid });

  function identityOf(user) {
    if (user.uid === localUid) return "the local user (shared with the CLI)";
    if (user.isAnonymous) return "an anonymous user";
    return user.email || user.displayName || `uid ${user.uid}`;
  }

  function settle(user) {
    render(user);
    if (user) onSignedIn(user);
    else onSignedOut();
  }

  function render(user) {
    if (!user?.isAnonymous) upgrading = false;
    const status = $("#auth-status");
    status.textContent = !user
      ? "Signed out"
      : user.isAnonymous
        ? "Signed in anonymously"
        : `Signed in as ${identityOf(user)}`;
    if (user) status.title = `uid ${user.uid}`;
    else status.removeAttribute("title");
    $("#signout").hidden = !user;
    $("#upgrade").hidden = !user?.isAnonymous || upgrading;

    const panel = !user || upgrading;
    $("#signin").hidden = !panel;
    $("#signin-heading").textContent = upgrading
      ? "Create an account to keep your missions"
      : "Sign in to Buddy Missions";
    $("#signin-about").textContent = upgrading
      ? "The missions of this anonymous session move to the account you create."
      : "Your missions belong to the account you sign in with.";
    $("#signin-anonymous").hidden = upgrading;
    $("#signin-local").hidden = upgrading || !localUid;
    $("#signin-back").hidden = !upgrading;

    const cli = link.cli;
    $("#cli-login").hidden = !cli || (panel && !cli.malformed);
    if (cli && (user || cli.malformed)) renderCli(user);
    $("#main").hidden = panel || Boolean(cli);
    $("#gate").hidden = !$("#main").hidden;
    $(".skip-link").href = $("#main").hidden ? "#gate" : "#main";

    // A link for another account: emulators switch to it once (arrive); elsewhere we say so.
    const notice = $("#auth-notice");
    notice.textContent =
      user && link.as && user.uid !== link.as
        ? `This link is for another account (uid ${link.as}). Sign out and sign in with it ` +
          "to see its missions."
        : "";
    notice.hidden = !notice.textContent;
  }

  function renderCli(user) {
    const malformed = Boolean(link.cli.malformed);
    $("#cli-login-text").textContent = malformed
      ? "This sign-in link is malformed. Run `buddy login` again for a new one."
      : `The Buddy CLI on this computer asks to act as ${identityOf(user)}.`;
    for (const id of ["#cli-login-allow", "#cli-login-deny", "#cli-login-switch"]) {
      $(id).hidden = malformed;
    }
  }

  // The first answer: nobody, or someone else than the link asks for. True when a sign-in
  // started (the listener answers again once it is done).
  function arrive(user) {
    const wanted = config.useEmulators && link.as && user?.uid !== link.as ? link.as : null;
    const uid = wanted ?? (!user && localUid ? localUid : null);
    if (!uid) return false;
    $("#auth-status").textContent = "Signing in…";
    signInWithCustomToken(auth, fakeToken(uid)).catch((error) => {
      settle(auth.currentUser);
      $("#signin-error").textContent = messageFor(error);
    });
    return true;
  }

  onAuthStateChanged(auth, (user) => {
    if (first) {
      first = false;
      if (arrive(user)) return;
    }
    settle(user);
  });

  wirePanel();
  wireCli();

  // Runs one sign-in action with the panel's buttons disabled; the error, in words, if any.
  async function attempt(action) {
    const buttons = [...document.querySelectorAll("#signin button")];
    for (const button of buttons) button.disabled = true;
    $("#signin-error").textContent = "";
    $("#signin-status").textContent = "";
    try {
      await action();
      return true;
    } catch (error) {
      $("#signin-error").textContent = messageFor(error, { upgrading });
      return false;
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  // Linking keeps the uid, so no listener fires: the header learns it here.
  async function upgradeWith(linkTo) {
    if (await attempt(() => linkTo(auth.currentUser))) {
      upgrading = false;
      $("#signin-email-form").reset();
      settle(auth.currentUser);
    }
  }

  function wirePanel() {
    const google = () => new GoogleAuthProvider();
    $("#signin-google").addEventListener("click", () => {
      if (upgrading) upgradeWith((user) => linkWithPopup(user, google()));
      else attempt(() => signInWithPopup(auth, google()));
    });

    const form = $("#signin-email-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const email = $("#signin-email").value.trim();
      const password = $("#signin-password").value;
      const creating = event.submitter?.id === "signup-email-submit";
      if (creating && upgrading) {
        const credential = EmailAuthProvider.credential(email, password);
        upgradeWith((user) => linkWithCredential(user, credential));
        return;
      }
      const signIn = creating ? createUserWithEmailAndPassword : signInWithEmailAndPassword;
      if (await attempt(() => signIn(auth, email, password))) form.reset();
    });

    $("#signin-reset").addEventListener("click", async () => {
      const email = $("#signin-email").value.trim();
      if (!email) {
        $("#signin-error").textContent = "Enter your email, then choose “Forgot password?”.";
        $("#signin-email").focus();
        return;
      }
      // The same words whether the account exists or not: the page tells nobody who has one.
      const sent = await attempt(() =>
        sendPasswordResetEmail(auth, email).catch((error) => {
          if (error.code !== "auth/user-not-found") throw error;
        }),
      );
      if (sent) {
        $("#signin-status").textContent =
          `If an account exists for ${email}, a link to reset its password was sent to it.`;
      }
    });

    $("#signin-anonymous").addEventListener("click", () => attempt(() => signInAnonymously(auth)));
    $("#signin-local").addEventListener("click", () =>
      attempt(() => signInWithCustomToken(auth, fakeToken(localUid))),
    );

    $("#upgrade").addEventListener("click", () => {
      upgrading = true;
      $("#signin-error").textContent = "";
      render(auth.currentUser);
      $("#signin-heading").focus();
    });
    $("#signin-back").addEventListener("click", () => {
      upgrading = false;
      render(auth.currentUser);
      $("#upgrade").focus();
    });
    $("#signout").addEventListener("click", () => {
      upgrading = false;
      signOut(auth);
    });
  }

  function wireCli() {
    $("#cli-login-allow").addEventListener("click", async () => {
      const user = auth.currentUser;
      if (!user) return;
      disableCli(true);
      try {
        // A fresh token: the CLI gets its full hour before its first refresh.
        const token = await user.getIdTokenResult(true);
        const { apiKey, projectId } = auth.app.options;
        const emulators = config.useEmulators ? config.emulators : null;
        postToCli({
          state: link.cli.state,
          refresh_token: user.refreshToken,
          id_token: token.token,
          uid: user.uid,
          email: user.email ?? "",
          display_name: user.displayName ?? "",
          provider: token.signInProvider ?? "",
          api_key: apiKey ?? "",
          project_id: projectId ?? "",
          api_url: config.apiUrl,
          auth_emulator: emulators?.auth ?? "",
          firestore_emulator: emulators
            ? `${emulators.firestore.host}:${emulators.firestore.port}`
            : "",
          dashboard_url: `${location.origin}/`,
        });
      } catch (error) {
        disableCli(false);
        $("#cli-login-error").textContent = messageFor(error);
      }
    });
    $("#cli-login-deny").addEventListener("click", () => {
      disableCli(true);
      postToCli({ state: link.cli.state, error: "access_denied" });
    });
    $("#cli-login-switch").addEventListener("click", () => signOut(auth));
  }

  function disableCli(disabled) {
    for (const button of document.querySelectorAll("#cli-login button")) button.disabled = disabled;
  }

  // A real form POST, top-level: the CLI's one-time server answers with the page shown next,
  // and a form needs no CORS from it.
  function postToCli(fields) {
    const form = document.createElement("form");
    form.method = "post";
    form.action = `http://127.0.0.1:${link.cli.port}/callback`;
    form.hidden = true;
    for (const [name, value] of Object.entries(fields)) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      form.append(input);
    }
    document.body.append(form);
    form.submit();
  }
}
