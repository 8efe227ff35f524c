// The rules editor (ecrm/api/dashboard_editor.py): checks the rules as you type, and shows a
// backtest as a table (downloadable as CSV) and a chart.
const area = document.getElementById('rules'), out = document.getElementById('check');
let timer = null;
async function check(){
  const r = await fetch('/dashboard/rules/check', {method:'POST', body: area.value});
  const a = await r.json();
  out.className = a.valid ? 'ok' : 'bad';
  out.textContent = a.message;
  document.body.dataset.checked = a.valid ? 'valid' : 'invalid';
}
area.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(check, 300); });
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const num = v => Number(v).toLocaleString('en-US');
const yuan = v => (Number(v) < 0 ? '-' : '') + '¥' + Math.abs(Number(v)).toLocaleString('en-US',
  {minimumFractionDigits: 2, maximumFractionDigits: 2});
const pct = v => v === null || v === undefined ? '–' : (v >= 0 ? '+' : '') + (v * 100).toFixed(1) + '%';
function csvOf(rows){
  return rows.map(r => r.map(v => { let s = String(v ?? '');
    if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }).join(',')).join('\n') + '\n';
}
function table(id, head, rows){
  return '<table id="' + id + '"><tr>' + head.map(h => '<th>' + h[0] + '<span class="en">' + h[1] +
    '</span></th>').join('') + '</tr>' + rows.map(r => '<tr>' + r.map((v, i) =>
    '<td data-kind="' + (head[i][2] || 'text') + '">' + esc(v) + '</td>').join('') + '</tr>').join('') +
    '</table>';
}
document.getElementById('backtest-button').addEventListener('click', async () => {
  const b = document.getElementById('backtest'); b.textContent = '…';
  const r = await fetch('/dashboard/rules/backtest', {method:'POST', body: area.value});
  const a = await r.json();
  if (a.error) { b.className = 'bad'; b.textContent = a.error; return; }
  b.className = '';
  const reasons = [...new Set(a.rules.flatMap(x => Object.keys(x.suppressed)))].sort();
  const head = [['规则','Rule'], ['会触发','Would fire','count'], ['客户数','Customers','count'],
    ['券成本','Coupon cost','yuan'], ['对照组','Held out','count'], ['延后','Deferred','count'],
    ...reasons.map(x => ['抑制: ' + x, 'Suppressed: ' + x, 'count'])];
  const rows = a.rules.map(x => [x.rule_id + (x.enabled ? '' : ' (off)'), num(x.fired), num(x.customers),
    yuan(x.coupon_cost), num(x.held_out), num(x.deferred), ...reasons.map(k => num(x.suppressed[k] || 0))]);
  const raw = [['rule_id','fired','customers','coupon_cost','held_out','deferred', ...reasons],
    ...a.rules.map(x => [x.rule_id, x.fired, x.customers, x.coupon_cost, x.held_out, x.deferred,
    ...reasons.map(k => x.suppressed[k] || 0)])];
  const url = URL.createObjectURL(new Blob([csvOf(raw)], {type:'text/csv'}));
  let html = '<p id="backtest-window">' + esc(a.window_text) + '</p>' + table('backtest-table', head, rows) +
    '<a class="csv" id="backtest-csv" download="backtest.csv" href="' + url + '">下载 CSV <span class="en">download CSV</span></a>';
  if (a.uplift.length) html += '<h2>已测得的提升 <span class="en">Measured uplift of the live decisions</span></h2>' +
    table('backtest-uplift', [['规则','Rule'], ['实验组','Treated','count'], ['对照组','Held out','count'],
    ['提升（95% 区间）','Uplift (95% CI)']], a.uplift.map(u => [u.rule_id, num(u.treated_customers),
    num(u.held_out_customers), pct(u.uplift) + (u.ci95 ? ' [' + pct(u.ci95[0]) + ', ' + pct(u.ci95[1]) + ']' : '')]));
  b.innerHTML = html;
  const ch = document.getElementById('backtest-chart'); ch.style.display = 'block';
  echarts.init(ch).setOption({animation:false, tooltip:{trigger:'axis'}, legend:{},
    xAxis:{type:'category', data:a.rules.map(x => x.rule_id), axisLabel:{interval:0, rotate:20}},
    yAxis:{type:'value'}, series:[
      {name:'会触发 would fire', type:'bar', data:a.rules.map(x => x.fired), itemStyle:{color:'#c62f2f'}},
      {name:'对照组 held out', type:'bar', data:a.rules.map(x => x.held_out), itemStyle:{color:'#888'}}]});
  document.body.dataset.backtested = 'yes';
});
check();