// A few DOM helpers: enough to build the pages without a framework.

/** h('button', {class: 'x', onclick}, 'text', child…) → element. Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  const { value: initial, ...rest } = attrs ?? {};
  for (const [key, value] of Object.entries(rest)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && key !== 'list' && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  // After the children, so that a <select> has its options; an input's is its default value, so
  // that form.reset() goes back to it.
  if (initial !== undefined && initial !== null) {
    if (tag === 'input' || tag === 'textarea') el.defaultValue = initial;
    else el.value = initial;
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const loading = (what = 'Loading…') => h('p', { class: 'muted', 'aria-busy': 'true' }, what);

/** An error from the API (or the network), shown where the thing would have been. */
export const failure = (error) => h('p', { class: 'error', role: 'alert' }, error.message);

export const empty = (text) => h('p', { class: 'empty' }, text);

let seq = 0;
export const uid = (prefix) => `${prefix}-${++seq}`;

/** A labelled form field; `error` slot below it for the API's `field` errors. */
export function field(label, input, hint) {
  input.id ||= uid('f');
  const error = h('p', { class: 'field-error', id: `${input.id}-error`, hidden: true });
  const hintEl = hint ? h('p', { class: 'hint', id: `${input.id}-hint` }, hint) : null;
  input.setAttribute('aria-describedby', [hintEl?.id, error.id].filter(Boolean).join(' '));
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, hintEl, error);
}

/**
 * Shows an API error on a form: next to the input whose `name` matches the error's `field`
 * (the API names fields as in the JSON body, e.g. `threshold` or `target.url`), else at the top.
 */
export function showFormError(form, error) {
  clearFormErrors(form);
  // `target` matches the input named `target.url`; a field with no slot of its own (a group of
  // checkboxes) shows its error at the top of the form.
  const name = error.field && CSS.escape(error.field);
  const input = name && form.querySelector(`[name="${name}"]:not([hidden]), [name^="${name}."]`);
  const slot = input && form.querySelector(`#${CSS.escape(input.id)}-error`);
  if (slot) {
    input.setAttribute('aria-invalid', 'true');
    slot.textContent = error.message;
    slot.hidden = false;
    input.focus();
  } else {
    const top = form.querySelector('.form-error');
    top.textContent = error.message;
    top.hidden = false;
  }
}

export function clearFormErrors(form) {
  for (const el of form.querySelectorAll('.field-error, .form-error')) {
    el.hidden = true;
    el.textContent = '';
  }
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

export const formError = () => h('p', { class: 'form-error', role: 'alert', hidden: true });

/** A form whose submit handler gets the form; the submit button is disabled while it runs. */
export function form(attrs, children, onsubmit) {
  const el = h('form', { ...attrs, novalidate: true }, formError(), children);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const buttons = el.querySelectorAll('button');
    buttons.forEach((b) => (b.disabled = true));
    clearFormErrors(el);
    try {
      await onsubmit(el);
    } catch (error) {
      showFormError(el, error);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  return el;
}

/** A modal confirmation (native <dialog>: focus trap, Escape to cancel). Resolves true/false. */
export function confirmDialog(title, text, action = 'Delete') {
  return new Promise((resolve) => {
    const dialog = h(
      'dialog',
      { class: 'confirm', 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, title),
      h('p', {}, text),
      h(
        'form',
        { method: 'dialog', class: 'row' },
        h('button', { value: 'cancel', class: 'secondary', autofocus: true }, 'Cancel'),
        h('button', { value: 'ok', class: 'danger' }, action),
      ),
    );
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'ok');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** A <time> showing local date and time, the exact instant in its title. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso }, dateTime.format(new Date(iso)));
}

export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${kind}` }, text);
}
