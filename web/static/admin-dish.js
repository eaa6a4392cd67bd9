// Admin console: a dish's choices and photo, in one dialog opened from its row.
//
// Option groups (name, how many to choose) and their options (name, price change, sold out,
// allergens) can be added, edited, reordered and deleted; the photo uploaded (JPEG, PNG or WebP, up to
// 5 MiB; the server re-encodes it) or removed. Each form shows its own errors next to its fields.

import { h, setChildren, ApiError, errorMessage, centsToDecimal, parseMoney, formatMoney, safeUrl, toast, confirmDialog } from '/static/common.js';
import { ALLERGENS, allergenLabel } from '/static/menu-choices.js';

/** Allergen checkboxes named `allergen`, ticked for `chosen`. */
export function allergenChecks(chosen, testid = 'allergen-check') {
  const set = new Set(chosen || []);
  return h('fieldset', { class: 'allergen-checks' },
    h('legend', { class: 'field-label', text: 'Allergens' }),
    ALLERGENS.map((code) => h('label', { class: 'field field-check' },
      h('input', { type: 'checkbox', name: 'allergen', value: code, checked: set.has(code), testid, dataset: { allergen: code } }),
      h('span', { text: allergenLabel(code) }))));
}

/** Allergen checkboxes folded under a summary of what is ticked (an option's, in a long list). */
function allergenDetails(chosen, testid) {
  const summary = (chosen || []).length ? `Allergens: ${chosen.map(allergenLabel).join(', ')}` : 'Allergens: none';
  return h('details', { class: 'allergen-details' }, h('summary', { text: summary }), allergenChecks(chosen, testid));
}

/** The allergen codes ticked in `form`. */
export function checkedAllergens(form) {
  return [...form.querySelectorAll('input[name="allergen"]:checked')].map((el) => el.value);
}

/** Run one form's call; show its error by the form and flag the field the server named. */
async function run(form, action) {
  const errorEl = form.querySelector('[data-testid="dish-form-error"]');
  errorEl.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
  try {
    await action();
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false;
    errorEl.textContent = errorMessage(err);
    const message = String(err.message || '');
    for (const el of form.elements) {
      if (el.name && message.startsWith(el.name)) el.setAttribute('aria-invalid', 'true');
    }
    return false;
  }
}

const errorP = () => h('p', { class: 'form-error', testid: 'dish-form-error', role: 'alert' });

/**
 * Opens the editor of `item` (restaurant `r`); `onChange(item)` gets the dish as stored after each
 * change, and `onClose()` is called when the dialog closes, so the list behind it follows.
 */
export function openDishEditor({ r, item, staff, base, onChange, onClose }) {
  const path = `${base}/menu-items/${encodeURIComponent(item.id)}`;
  const dialog = h('dialog', { class: 'dialog dish-editor', testid: 'dish-editor', 'aria-label': `Choices and photo of ${item.name}` });
  const body = h('div', { class: 'stack' });
  dialog.append(body);
  let dish = item;

  const money = (cents) => formatMoney(cents, r.currency);
  const reload = async () => {
    dish = await staff.request('GET', path, { retry: { attempts: 3 } });
    onChange(dish);
    render();
  };

  function photoSection() {
    const form = h('form', { class: 'card stack', testid: 'photo-form', novalidate: true });
    const thumb = dish.thumbnail_url ? safeUrl(dish.thumbnail_url) : null;
    const fileInput = h('input', { type: 'file', name: 'image', accept: 'image/jpeg,image/png,image/webp', testid: 'photo-input' });
    fileInput.addEventListener('change', () => {
      const file = fileInput.files && fileInput.files[0];
      if (!file) return;
      run(form, async () => {
        await staff.request('PUT', `${path}/image`, { body: file });
        toast('Photo saved.', 'ok', 2500);
        await reload();
      });
    });
    setChildren(form,
      h('h3', { text: 'Photo' }),
      thumb ? h('img', { class: 'photo-preview', testid: 'photo-preview', src: thumb, alt: `Photo of ${dish.name}`, width: 160, height: 160 })
        : h('p', { class: 'muted small', testid: 'photo-none', text: 'No photo yet.' }),
      h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'Upload a photo (JPEG, PNG or WebP, up to 5 MB)' }), fileInput),
      thumb ? h('button', {
        type: 'button', class: 'btn btn-small btn-danger-ghost', testid: 'photo-remove', text: 'Remove photo',
        on: { click: () => run(form, async () => { await staff.request('DELETE', `${path}/image`); await reload(); }) },
      }) : null,
      errorP());
    return form;
  }

  function groupForm(group, index, count) {
    const editing = !!group;
    const g = group || { name: '', min: 0, max: 1 };
    const form = h('form', { class: ['stack', !editing && 'card'], testid: editing ? 'group-form' : 'new-group-form', novalidate: true, dataset: { groupId: g.id } },
      h('div', { class: 'form-row' },
        h('label', { class: 'field' }, h('span', { class: 'field-label', text: editing ? 'Choice' : 'New choice (e.g. Size, Extras)' }),
          h('input', { class: 'input', name: 'name', value: g.name, maxlength: 100, testid: 'group-name' })),
        h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'At least' }),
          h('input', { class: 'input', name: 'min', type: 'number', min: 0, max: 30, value: String(g.min), testid: 'group-min' })),
        h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'At most' }),
          h('input', { class: 'input', name: 'max', type: 'number', min: 1, max: 30, value: String(g.max), testid: 'group-max' }))),
      errorP(),
      h('div', { class: 'form-actions' },
        editing && index > 0 ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'group-up', text: '↑', 'aria-label': `Move ${g.name} up`, on: { click: () => move(form, index, -1) } }) : null,
        editing && index < count - 1 ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'group-down', text: '↓', 'aria-label': `Move ${g.name} down`, on: { click: () => move(form, index, 1) } }) : null,
        editing ? h('button', {
          type: 'button', class: 'btn btn-small btn-danger-ghost', testid: 'group-delete', text: 'Delete choice',
          on: {
            click: async () => {
              if (!(await confirmDialog(`Delete the choice “${g.name}” and its options? Past orders keep their copy.`, { title: 'Delete choice?', confirmLabel: 'Delete', danger: true }))) return;
              run(form, async () => { await staff.request('DELETE', `${path}/option-groups/${encodeURIComponent(g.id)}`); await reload(); });
            },
          },
        }) : null,
        h('button', { type: 'submit', class: 'btn btn-small btn-primary', testid: editing ? 'group-save' : 'group-add', text: editing ? 'Save choice' : 'Add choice' })));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      run(form, async () => {
        const values = { name: form.elements.name.value.trim(), min: Number(form.elements.min.value), max: Number(form.elements.max.value) };
        if (editing) await staff.request('PATCH', `${path}/option-groups/${encodeURIComponent(g.id)}`, { body: values });
        else await staff.request('POST', `${path}/option-groups`, { body: values });
        await reload();
      });
    });
    if (!editing) return form;
    // The group's options follow its form (forms are never nested).
    return h('section', { class: 'card stack', testid: 'option-group-editor', dataset: { groupId: g.id } },
      form,
      h('div', { class: 'stack' }, (g.options || []).map((o, i) => optionRow(g, o, i, g.options.length))),
      optionForm(g));
  }

  async function move(form, index, step) {
    const groups = dish.option_groups || [];
    const a = groups[index];
    const b = groups[index + step];
    run(form, async () => {
      await staff.request('PATCH', `${path}/option-groups/${encodeURIComponent(a.id)}`, { body: { position: index + step } });
      await staff.request('PATCH', `${path}/option-groups/${encodeURIComponent(b.id)}`, { body: { position: index } });
      await reload();
    });
  }

  function optionRow(group, option, index, count) {
    const groupPath = `${path}/option-groups/${encodeURIComponent(group.id)}/options/${encodeURIComponent(option.id)}`;
    const form = h('form', { class: 'option-row stack', testid: 'option-form', novalidate: true, dataset: { optionId: option.id } },
      h('div', { class: 'form-row' },
        h('input', { class: 'input', name: 'name', value: option.name, maxlength: 100, 'aria-label': 'Option name', testid: 'option-name' }),
        h('input', { class: 'input', name: 'price_delta_cents', value: centsToDecimal(option.price_delta_cents, r.currency), 'aria-label': 'Price change', testid: 'option-delta' }),
        h('label', { class: 'field-check' }, h('input', { type: 'checkbox', name: 'available', checked: option.available !== false, testid: 'option-available' }), h('span', { text: 'Available' }))),
      allergenDetails(option.allergens, 'option-allergen-check'),
      errorP(),
      h('div', { class: 'form-actions' },
        index > 0 ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', text: '↑', 'aria-label': `Move ${option.name} up`, on: { click: () => reorder(form, group, index, -1) } }) : null,
        index < count - 1 ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', text: '↓', 'aria-label': `Move ${option.name} down`, on: { click: () => reorder(form, group, index, 1) } }) : null,
        h('button', {
          type: 'button', class: 'btn btn-small btn-danger-ghost', testid: 'option-delete', text: 'Delete',
          on: { click: () => run(form, async () => { await staff.request('DELETE', groupPath); await reload(); }) },
        }),
        h('button', { type: 'submit', class: 'btn btn-small btn-secondary', testid: 'option-save', text: `Save (${money(option.price_delta_cents)})` })));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      run(form, async () => {
        const delta = parseDelta(form.elements.price_delta_cents.value);
        await staff.request('PATCH', groupPath, {
          body: { name: form.elements.name.value.trim(), price_delta_cents: delta, available: form.elements.available.checked, allergens: checkedAllergens(form) },
        });
        await reload();
      });
    });
    return form;
  }

  async function reorder(form, group, index, step) {
    const options = group.options || [];
    const at = (o) => `${path}/option-groups/${encodeURIComponent(group.id)}/options/${encodeURIComponent(o.id)}`;
    run(form, async () => {
      await staff.request('PATCH', at(options[index]), { body: { position: index + step } });
      await staff.request('PATCH', at(options[index + step]), { body: { position: index } });
      await reload();
    });
  }

  /** A price change typed as money (negative allowed), in minor units. */
  function parseDelta(text) {
    const s = String(text || '').trim();
    const negative = s.startsWith('-') || s.startsWith('−');
    const cents = parseMoney(negative ? s.slice(1) : s || '0', r.currency);
    if (cents === null) throw new ApiError(400, 'invalid_request', 'price_delta_cents: enter an amount such as 0.40 or -1.00');
    return negative ? -cents : cents;
  }

  function optionForm(group) {
    const form = h('form', { class: 'stack new-option', testid: 'new-option-form', novalidate: true },
      h('div', { class: 'form-row' },
        h('input', { class: 'input', name: 'name', maxlength: 100, placeholder: 'New option, e.g. Large', 'aria-label': 'New option name', testid: 'new-option-name' }),
        h('input', { class: 'input', name: 'price_delta_cents', placeholder: 'Price change, e.g. 0.40', 'aria-label': 'Price change', testid: 'new-option-delta' })),
      allergenDetails([], 'new-option-allergen-check'),
      errorP(),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'btn btn-small btn-primary', testid: 'option-add', text: 'Add option' })));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      run(form, async () => {
        const delta = parseDelta(form.elements.price_delta_cents.value);
        await staff.request('POST', `${path}/option-groups/${encodeURIComponent(group.id)}/options`, {
          body: { name: form.elements.name.value.trim(), price_delta_cents: delta, allergens: checkedAllergens(form) },
        });
        await reload();
      });
    });
    return form;
  }

  function render() {
    const groups = dish.option_groups || [];
    setChildren(body,
      h('h2', { class: 'dialog-title', text: `${dish.name}: choices and photo` }),
      photoSection(),
      h('h3', { text: 'Choices' }),
      groups.length ? null : h('p', { class: 'muted small', text: 'No choices yet: guests add this dish as it is.' }),
      groups.map((g, i) => groupForm(g, i, groups.length)),
      groupForm(null, 0, 0),
      h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'btn btn-secondary', testid: 'dish-editor-close', text: 'Done', on: { click: () => dialog.close() } })));
  }

  dialog.addEventListener('close', () => {
    dialog.remove();
    if (onClose) onClose();
  });
  render();
  document.body.append(dialog);
  dialog.showModal();
}
