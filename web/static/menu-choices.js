// Real menus in the guest app: a dish's option groups (the dish sheet), its price with the options
// chosen, the 14 allergens (badges, and the table's declared allergies).
//
// The server checks and prices everything again; this module only helps the guest choose right.

import { h, safeUrl, setChildren } from '/static/common.js';

/** The 14 allergens EU and UK law makes restaurants declare, in the law's order. */
export const ALLERGENS = ['gluten', 'crustaceans', 'eggs', 'fish', 'peanuts', 'soybeans', 'milk', 'nuts',
  'celery', 'mustard', 'sesame', 'sulphites', 'lupin', 'molluscs'];

const ALLERGEN_LABELS = {
  gluten: 'Gluten', crustaceans: 'Crustaceans', eggs: 'Eggs', fish: 'Fish', peanuts: 'Peanuts',
  soybeans: 'Soya', milk: 'Milk', nuts: 'Nuts', celery: 'Celery', mustard: 'Mustard', sesame: 'Sesame',
  sulphites: 'Sulphites', lupin: 'Lupin', molluscs: 'Molluscs',
};

export function allergenLabel(code) {
  return ALLERGEN_LABELS[code] || String(code);
}

export function groupsOf(item) {
  return item && Array.isArray(item.option_groups) ? item.option_groups : [];
}

function allergensOf(thing) {
  return thing && Array.isArray(thing.allergens) ? thing.allergens.map(String) : [];
}

/** The chosen options of a dish as `{group, option}`, in menu order; unknown ids are left out. */
export function chosenOptions(item, optionIds) {
  const ids = new Set((optionIds || []).map(String));
  const out = [];
  for (const group of groupsOf(item)) {
    for (const option of group.options || []) {
      if (ids.has(String(option.id))) out.push({ group, option });
    }
  }
  return out;
}

/** Item price plus the options' deltas, never below zero (as the server prices it). */
export function unitPrice(item, optionIds) {
  const delta = chosenOptions(item, optionIds).reduce((sum, c) => sum + Number(c.option.price_delta_cents || 0), 0);
  return Math.max(0, Number(item.price_cents || 0) + delta);
}

/** What stops these options being ordered now: null, 'missing' (a choice changed) or 'soldout'. */
export function optionsProblem(item, optionIds) {
  const chosen = chosenOptions(item, optionIds);
  if (chosen.length !== (optionIds || []).length) return 'missing';
  for (const group of groupsOf(item)) {
    const n = chosen.filter((c) => c.group.id === group.id).length;
    if (n < group.min || n > group.max) return 'missing';
  }
  return chosen.some((c) => c.option.available === false) ? 'soldout' : null;
}

/** The declared allergens this dish (with these options) contains. */
export function conflicts(item, optionIds, declared) {
  if (!declared || !declared.length) return [];
  const found = new Set(allergensOf(item));
  for (const c of chosenOptions(item, optionIds)) for (const a of allergensOf(c.option)) found.add(a);
  return ALLERGENS.filter((a) => found.has(a) && declared.includes(a));
}

/** A short list of allergen badges. */
export function allergenBadges(codes, testid = 'allergen-badge') {
  if (!codes || !codes.length) return null;
  return h('ul', { class: 'allergens', 'aria-label': 'Allergens' },
    codes.map((code) => h('li', { class: 'allergen', testid, dataset: { allergen: code }, text: allergenLabel(code) })));
}

function groupHint(group) {
  if (group.min === 1 && group.max === 1) return 'Required · choose one';
  if (group.min > 0 && group.min === group.max) return `Required · choose ${group.min}`;
  if (group.min > 0) return `Required · choose ${group.min} to ${group.max}`;
  return group.max === 1 ? 'Optional' : `Optional · up to ${group.max}`;
}

function groupShortfall(group, n) {
  if (n < group.min) return group.min === 1 ? `Choose a ${group.name.toLowerCase()}.` : `Choose at least ${group.min}.`;
  if (n > group.max) return `Choose at most ${group.max}.`;
  return '';
}

/**
 * The dish sheet: the guest picks options group by group (a radio for one choice, checkboxes up to
 * `max`), sees the price change, and adds the dish. `onAdd(optionIds)` receives the choice.
 */
export function openDishSheet({ item, money, declared, onAdd }) {
  const selected = new Map(groupsOf(item).map((g) => [String(g.id), new Set()]));
  const messages = new Map();
  const dialog = h('dialog', { class: 'dialog dish-sheet', testid: 'dish-sheet', 'aria-label': item.name });
  const body = h('form', { class: 'stack', method: 'dialog', novalidate: true });
  dialog.append(body);

  const chosenIds = () => [...selected.values()].flatMap((s) => [...s]);
  const render = () => {
    const ids = chosenIds();
    const groups = groupsOf(item).map((group) => {
      const picked = selected.get(String(group.id));
      const single = group.max === 1;
      const options = (group.options || []).map((option) => {
        const soldOut = option.available === false;
        const clash = allergensOf(option).some((a) => (declared || []).includes(a));
        const checked = picked.has(String(option.id));
        const full = !single && !checked && picked.size >= group.max;
        const delta = Number(option.price_delta_cents || 0);
        return h('label', { class: ['option', (soldOut || clash) && 'is-disabled'], testid: 'dish-option', dataset: { optionId: option.id } },
          h('input', {
            type: single ? 'radio' : 'checkbox',
            name: `group-${group.id}`,
            value: String(option.id),
            checked,
            disabled: soldOut || clash || full,
            on: {
              change: (e) => {
                if (single) picked.clear();
                if (e.target.checked) picked.add(String(option.id));
                else picked.delete(String(option.id));
                messages.delete(String(group.id));
                render();
              },
            },
          }),
          h('span', { class: 'option-name', text: option.name }),
          allergenBadges(allergensOf(option), 'option-allergen'),
          soldOut ? h('span', { class: 'badge badge-soldout', text: 'Sold out' }) : null,
          clash ? h('span', { class: 'badge badge-allergy', text: 'Your allergen' }) : null,
          delta ? h('span', { class: 'option-delta', text: `${delta > 0 ? '+' : '−'}${money(Math.abs(delta))}` }) : null);
      });
      const message = messages.get(String(group.id)) || '';
      return h('fieldset', { class: ['option-group', message && 'has-error'], testid: 'option-group', dataset: { groupId: group.id } },
        h('legend', {},
          h('span', { class: 'option-group-name', text: group.name }), ' ',
          h('span', { class: ['option-group-hint', group.min > 0 && 'is-required'], testid: 'option-group-hint', text: groupHint(group) })),
        options,
        h('p', { class: 'form-error', testid: 'option-group-error', role: 'alert', text: message }));
    });
    const photo = item.image_url ? safeUrl(item.image_url) : null;
    setChildren(body,
      photo ? h('img', { class: 'dish-photo', testid: 'dish-photo', src: photo, alt: item.name, width: 1200, height: 900, decoding: 'async' }) : null,
      h('h2', { class: 'dialog-title', text: item.name }),
      item.description ? h('p', { class: 'dialog-text', text: item.description }) : null,
      allergenBadges(allergensOf(item)),
      groups,
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', class: 'btn btn-secondary', testid: 'dish-cancel', text: 'Cancel', on: { click: close } }),
        h('button', { type: 'submit', class: 'btn btn-primary', testid: 'dish-add', text: `Add · ${money(unitPrice(item, ids))}` })));
  };
  const close = () => { dialog.close(); dialog.remove(); };
  body.addEventListener('submit', (e) => {
    e.preventDefault();
    let first = null;
    for (const group of groupsOf(item)) {
      const problem = groupShortfall(group, selected.get(String(group.id)).size);
      if (problem) {
        messages.set(String(group.id), problem);
        first = first || group;
      }
    }
    if (first) {
      render();
      const field = body.querySelector(`[data-group-id="${CSS.escape(String(first.id))}"] input:not([disabled])`);
      if (field) field.focus();
      return;
    }
    onAdd(chosenIds());
    close();
  });
  dialog.addEventListener('close', () => dialog.remove());
  render();
  document.body.append(dialog);
  dialog.showModal();
}

/** "I have allergies": the guest ticks the allergens the table must avoid. */
export function openAllergySheet({ declared, onSave }) {
  const chosen = new Set(declared || []);
  const dialog = h('dialog', { class: 'dialog', testid: 'allergy-sheet', 'aria-label': 'Allergies' });
  const form = h('form', { class: 'stack', method: 'dialog', novalidate: true },
    h('h2', { class: 'dialog-title', text: 'Allergies at this table' }),
    h('p', { class: 'dialog-text', text: 'Dishes that contain them are marked and cannot be added. The kitchen must confirm it has read them before it starts on your order.' }),
    h('div', { class: 'allergy-grid' }, ALLERGENS.map((code) => h('label', { class: 'option', testid: 'allergy-choice', dataset: { allergen: code } },
      h('input', {
        type: 'checkbox', value: code, checked: chosen.has(code),
        on: { change: (e) => { if (e.target.checked) chosen.add(code); else chosen.delete(code); } },
      }),
      h('span', { text: allergenLabel(code) })))),
    h('div', { class: 'dialog-actions' },
      h('button', { type: 'button', class: 'btn btn-secondary', text: 'Cancel', on: { click: () => dialog.close() } }),
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'allergy-save', text: 'Save' })));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    onSave(ALLERGENS.filter((a) => chosen.has(a)));
    dialog.close();
  });
  dialog.append(form);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}
