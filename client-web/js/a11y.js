// Keyboard and screen-reader helpers of the user page: what is announced,
// whether a control was focused on purpose, and modal dialogs that keep and
// give back the focus.

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ announcements
// Everything a screen reader is told goes through announce(), into one of the
// page's two live regions (#announcer polite, #alerter assertive for errors).
// The visible status line, the messages and the error texts are not live
// regions themselves, so each piece of news is read once. Each announcement is
// a new paragraph: a screen reader reads additions even when the text repeats
// (a stranger saying "hi" twice), and queues polite ones instead of dropping
// the first of two quick ones.
const ANNOUNCEMENTS_KEPT = 5;

export function announce(text, { urgent = false } = {}) {
  if (!text) return;
  const region = $(urgent ? 'alerter' : 'announcer');
  const p = document.createElement('p');
  p.textContent = text;
  region.append(p);
  while (region.childElementCount > ANNOUNCEMENTS_KEPT) region.firstElementChild.remove();
}

// ------------------------------------------------------------------ deliberate focus
// A button the person moved to with Tab is meant: Enter or Space on it acts.
// A button that holds the focus only because it was clicked (or focused by
// the page) is not: typing there is typing a message.
let tabbing = false;
let tabFocused = null;

export function trackDeliberateFocus() {
  document.addEventListener('keydown', (e) => { tabbing = e.key === 'Tab'; }, true);
  document.addEventListener('keyup', (e) => { if (e.key === 'Tab') tabbing = false; }, true);
  document.addEventListener('pointerdown', () => { tabbing = false; }, true);
  document.addEventListener('focusin', (e) => {
    tabFocused = tabbing ? e.target : null;
    tabbing = false;
  });
}

export function focusedOnPurpose(el) {
  return el !== null && el === tabFocused && document.activeElement === el;
}

/** The character a key press types, or null (shortcuts, navigation keys, IME). */
export function typedChar(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return null;
  return [...e.key].length === 1 ? e.key : null;
}

/** Types `text` into `input` at its caret, as the person would have. */
export function typeInto(input, text) {
  const at = input.selectionStart ?? input.value.length;
  const to = input.selectionEnd ?? at;
  input.setRangeText(text, at, to, 'end');
  input.dispatchEvent(new Event('input', { bubbles: true }));
}

/** Whether keys typed at `el` are its own (a field, a list box, a check box's Space). */
export function ownsTyping(el) {
  return el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement
    || (el instanceof HTMLElement && el.isContentEditable);
}

// ------------------------------------------------------------------ modal dialogs
function tabbables(root) {
  const sel = 'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])';
  return [...root.querySelectorAll(sel)].filter((el) => !el.disabled && !el.closest('[hidden]')
    && el.getClientRects().length > 0
    // Of a radio group only the checked one (or the first) is a Tab stop.
    && !(el.type === 'radio' && !isRadioStop(el, root)));
}

function isRadioStop(radio, root) {
  const group = [...root.querySelectorAll(`input[type="radio"][name="${CSS.escape(radio.name)}"]`)];
  const checked = group.find((r) => r.checked);
  return radio === (checked || group[0]);
}

/**
 * Makes `dialog` (opened with showModal) keep Tab and Shift+Tab inside it,
 * and give the focus back when it closes: to `returnTo()` when that names
 * an element that can take it, otherwise to the element focused before.
 */
export function keepFocusIn(dialog, { returnTo = () => null } = {}) {
  let before = null;
  let beforeMeant = false;
  dialog.addEventListener('keydown', (e) => {
    if (e.key !== 'Tab') return;
    const stops = tabbables(dialog);
    if (!stops.length) return;
    const first = stops[0];
    const last = stops[stops.length - 1];
    const inside = dialog.contains(document.activeElement);
    if (e.shiftKey && (document.activeElement === first || !inside)) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (document.activeElement === last || !inside)) {
      e.preventDefault();
      first.focus();
    }
  });
  dialog.addEventListener('close', () => {
    const target = [returnTo(), before].find((el) => el && el.isConnected && !el.disabled && el.getClientRects().length > 0);
    if (target) {
      target.focus();
      // Back where the person had Tabbed to: still meant.
      if (target === before && beforeMeant) tabFocused = target;
    }
    before = null;
  });
  return {
    open() {
      before = document.activeElement;
      beforeMeant = focusedOnPurpose(before);
      dialog.showModal();
    },
  };
}
