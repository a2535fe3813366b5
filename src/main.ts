import { mount } from 'svelte';
import App from './ui/App.svelte';
import './ui/global.css';

const target = document.getElementById('app')!;
target.textContent = '';
mount(App, { target });
